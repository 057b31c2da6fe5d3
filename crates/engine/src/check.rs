//! `pmempool check` for obj pools (docs/format.md §21): shutdown state, pool
//! header of every part, UUIDs and links; the verdicts consistent / not
//! consistent / repaired / cannot repair / sync required, and repair of what
//! pmempool repairs.
//!
//! The messages, their order, the questions and the verdicts follow
//! libpmempool 1.12.1 (`check_sds.c`, `check_pool_hdr.c`). Two things differ
//! on purpose:
//!
//! * **Repairs are all or nothing.** pmempool writes each header as soon as
//!   one of its fields is fixed, so a repair that stops half way (an
//!   ambiguous UUID found after a link was rewritten, a question answered
//!   "no") leaves some headers changed. Here every fix is made on in-memory
//!   copies, and headers are written only when the whole check ends as
//!   repaired; "reverting changes" then means that nothing was written.
//! * **A header is never left with a bad checksum.** pmempool rewrites a
//!   link with `-r` and needs `-a` to regenerate the checksum, so `check -r
//!   -y` without `-a` leaves the header with a bad checksum and the pool
//!   unopenable. Here the verdicts are pmempool's (without `-a` such a pool
//!   "cannot repair"), but since nothing is written unless the whole repair
//!   succeeds, the link is not written either. With `-a` the checksum is
//!   regenerated and the header is written once, whole, with its checksum.
//!
//! Writes go through [`PartFile`]: the whole 4096-byte header in one write,
//! then flush and fence. A dry run (`-d`) computes the same repairs and
//! writes nothing.

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use poolsync_header::{PoolHdr, PoolType, RawUuid, Sds, FEAT_SDS};
use poolsync_pmem::{Access, PartFile, Storage};
use serde::Serialize;

use crate::inspect::{inspect, sds_adr_failure, ser_hex, Health, Inconsistency};
use crate::open::{open, unusable, OpenSet, PartStatus};
use crate::Error;

/// Options of `pmempool check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// `-r`: repair what can be repaired.
    pub repair: bool,
    /// `-d`: with `-r`, compute the repairs but write nothing.
    pub dry_run: bool,
    /// `-a`: advanced repairs (here: regenerating a header checksum).
    pub advanced: bool,
    /// `-y`: answer yes to every question.
    pub always_yes: bool,
}

impl CheckOptions {
    /// Rejects combinations libpmempool rejects: `-d`, `-a` and `-y` need `-r`.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.repair && (self.dry_run || self.advanced || self.always_yes) {
            return Err(Error::InvalidOptions {
                reason: "dry run (-d), advanced (-a) and always yes (-y) are applicable only with repair (-r)",
            });
        }
        Ok(())
    }
}

/// The answer to a repair question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Do it.
    Yes,
    /// Do not.
    No,
    /// Neither (for example end of input): the repair cannot complete.
    Invalid,
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Progress (pmempool shows it with `-v`).
    Info,
    /// A problem found (pmempool shows it unless `-q`).
    Error,
    /// A question asked (only with `-r` and without `-y`).
    Question,
}

/// One message of a check, as pmempool words it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// What the message is.
    pub kind: MessageKind,
    /// The text.
    pub text: String,
}

/// Receives messages as they happen and answers questions.
pub trait CheckUi {
    /// A progress or error message.
    fn message(&mut self, message: &Message);
    /// A question (`<problem>. <question>`); only asked with `-r` and without `-y`.
    fn ask(&mut self, question: &str) -> Answer;
}

/// The verdict of a check, with pmempool's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    /// Nothing wrong.
    Consistent,
    /// Something wrong, not repaired.
    NotConsistent,
    /// Something was wrong and has been repaired (or would be, in a dry run).
    Repaired,
    /// Something is wrong that check cannot repair.
    CannotRepair,
    /// Some replicas are fine and others need `sync`.
    SyncRequired,
}

impl CheckResult {
    /// pmempool's word for the verdict, as in `<file>: <verdict>`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Consistent => "consistent",
            CheckResult::NotConsistent => "not consistent",
            CheckResult::Repaired => "repaired",
            CheckResult::CannotRepair => "cannot repair",
            CheckResult::SyncRequired => "sync required",
        }
    }

    /// `true` for the verdicts pmempool exits 0 with.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            CheckResult::Consistent | CheckResult::Repaired | CheckResult::SyncRequired
        )
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header a repair writes (or would write, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderWrite {
    /// Replica index.
    pub replica: usize,
    /// Part index.
    pub part: usize,
    /// The part file.
    pub path: PathBuf,
    /// The new header checksum.
    #[serde(serialize_with = "ser_hex")]
    pub checksum: u64,
}

/// Everything a check found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The verdict.
    pub result: CheckResult,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// Headers written (or, in a dry run, that would be written).
    pub writes: Vec<HeaderWrite>,
    /// `true` when nothing was written because of `-d`.
    pub dry_run: bool,
    /// The set as `sync` sees it, judged before any repair.
    pub health: Health,
}

/// `pmempool check [-r [-d] [-a] [-y]] <path>` for an obj pool or pool set.
///
/// Fails (pmempool's "checking consistency failed") when the set cannot be
/// opened: a part missing, unreadable or of the wrong size, a part in use, a
/// pool type other than obj, or an unsupported pool set.
pub fn check<S: Storage>(
    storage: &S,
    path: &Path,
    opts: &CheckOptions,
    ui: &mut dyn CheckUi,
) -> Result<CheckReport, Error> {
    opts.validate()?;
    let access = if opts.repair && !opts.dry_run {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let set = open(storage, path, access)?;
    check_open(&set, opts, ui)
}

/// [`check`] on a set opened already (read-write unless it is a dry run or
/// a check without repair).
pub fn check_open<F: PartFile>(
    set: &OpenSet<F>,
    opts: &CheckOptions,
    ui: &mut dyn CheckUi,
) -> Result<CheckReport, Error> {
    opts.validate()?;
    let mut hdrs = working_headers(set)?;
    let master = hdrs
        .first()
        .and_then(|r| r.first())
        .and_then(|h| h.pool_type());
    // The master's type, as pmempool takes it; but a master that says blk
    // or log among obj replicas is one damaged obj header, which the
    // header step reports.
    let any_obj = hdrs
        .iter()
        .flatten()
        .any(|h| hdr_valid(h) && h.pool_type() == Some(PoolType::Obj));
    let pool_type = match master {
        Some(PoolType::Blk | PoolType::Log) if any_obj => Some(PoolType::Obj),
        other => other,
    };
    if let Some(ty @ (PoolType::Blk | PoolType::Log)) = pool_type {
        return Err(Error::UnsupportedPoolType {
            path: set.path.clone(),
            kind: ty.name(),
        });
    }
    let health = inspect(set);
    let mut run = Run {
        ui,
        opts: *opts,
        messages: Vec::new(),
        state: State::Consistent,
        sync_required: false,
        modified: hdrs.iter().map(|r| vec![false; r.len()]).collect(),
        nfiles: set.nfiles(),
        nparts: set.replicas.iter().map(|r| r.parts.len()).collect(),
        paths: set
            .replicas
            .iter()
            .map(|r| r.parts.iter().map(|p| p.path.clone()).collect())
            .collect(),
    };
    // The steps of check.c in order; each stops the check on a hard error.
    // Bad blocks (compat CHECK_BAD_BLOCKS) are not examined yet; backup is
    // refused by the caller.
    let flow = if pool_type == Some(PoolType::Obj) {
        run.check_sds(&mut hdrs)
    } else {
        // libpmempool runs the shutdown-state step only for a known pool type.
        Flow::Continue
    };
    let flow = match flow {
        Flow::Continue => run.check_headers(&hdrs, pool_type),
        Flow::Stop => Flow::Stop,
    };
    if let Flow::Continue = flow {
        run.check_uuids(&mut hdrs);
        run.check_features(&health);
    }
    let result = match run.state {
        State::Consistent if run.sync_required => CheckResult::SyncRequired,
        State::Repaired if run.sync_required => CheckResult::SyncRequired,
        State::Consistent => CheckResult::Consistent,
        State::Repaired => CheckResult::Repaired,
        State::NotConsistent => CheckResult::NotConsistent,
        State::CannotRepair => CheckResult::CannotRepair,
    };
    let mut writes = Vec::new();
    if run.state == State::Repaired {
        for (r, rep) in hdrs.iter().enumerate() {
            for (p, hdr) in rep.iter().enumerate() {
                if !run
                    .modified
                    .get(r)
                    .and_then(|m| m.get(p))
                    .copied()
                    .unwrap_or(false)
                {
                    continue;
                }
                let Some(part) = set.part(r, p) else {
                    continue;
                };
                if !hdr.checksum_ok() && part.header().is_some_and(PoolHdr::checksum_ok) {
                    // Every fix path ends with a valid checksum; this guards
                    // the promise never to write a header with a bad one.
                    return Err(Error::PartUnusable {
                        set: set.path.clone(),
                        replica: r,
                        part_index: p,
                        part: part.path.clone(),
                        reason: "internal error: a repaired header would have a bad checksum; nothing was written"
                            .to_string(),
                    });
                }
                writes.push(HeaderWrite {
                    replica: r,
                    part: p,
                    path: part.path.clone(),
                    checksum: hdr.checksum,
                });
            }
        }
        if !opts.dry_run {
            for w in &writes {
                let (Some(part), Some(hdr)) = (
                    set.part(w.replica, w.part),
                    hdrs.get(w.replica).and_then(|r| r.get(w.part)),
                ) else {
                    continue;
                };
                let Some(file) = part.file.as_ref() else {
                    continue;
                };
                crate::durable::write_header(file, hdr)?;
            }
        }
    }
    Ok(CheckReport {
        result,
        messages: run.messages,
        writes,
        dry_run: opts.dry_run,
        health,
    })
}

/// The headers of every header-carrying part, or why the check cannot start.
fn working_headers<F: PartFile>(set: &OpenSet<F>) -> Result<Vec<Vec<PoolHdr>>, Error> {
    let mut out = Vec::with_capacity(set.replicas.len());
    for rep in &set.replicas {
        for part in &rep.parts {
            if part.status != PartStatus::Ok {
                return Err(unusable(
                    set,
                    part.replica,
                    part.index,
                    &part.path,
                    part.status.to_string(),
                ));
            }
        }
        let mut hdrs = Vec::with_capacity(rep.nhdrs);
        for part in rep.parts.iter().take(rep.nhdrs) {
            let read = part
                .read_header()
                .map_err(|reason| unusable(set, part.replica, part.index, &part.path, reason))?;
            hdrs.push(read.hdr.clone());
        }
        out.push(hdrs);
    }
    Ok(out)
}

/// libpmempool's `ppc->result` while the check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Consistent,
    Repaired,
    NotConsistent,
    CannotRepair,
}

/// Whether the next step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

const CANNOT_COMPLETE: &str = "cannot complete repair, reverting changes";
const REQUIRE_ADVANCED: &str =
    "the following error can be fixed using PMEMPOOL_CHECK_ADVANCED flag";

/// A question of one step: what is wrong, what to ask, and the fix.
struct Question<T> {
    problem: String,
    ask: String,
    fix: T,
}

/// The four link fields of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    NextPart,
    PrevPart,
    NextRepl,
    PrevRepl,
}

impl Link {
    const ALL: [Link; 4] = [
        Link::NextPart,
        Link::PrevPart,
        Link::NextRepl,
        Link::PrevRepl,
    ];

    fn field(self) -> &'static str {
        match self {
            Link::NextPart => "pool_hdr.next_part_uuid",
            Link::PrevPart => "pool_hdr.prev_part_uuid",
            Link::NextRepl => "pool_hdr.next_repl_uuid",
            Link::PrevRepl => "pool_hdr.prev_repl_uuid",
        }
    }

    fn get(self, h: &PoolHdr) -> RawUuid {
        match self {
            Link::NextPart => h.next_part_uuid,
            Link::PrevPart => h.prev_part_uuid,
            Link::NextRepl => h.next_repl_uuid,
            Link::PrevRepl => h.prev_repl_uuid,
        }
    }

    fn set(self, h: &mut PoolHdr, value: RawUuid) {
        match self {
            Link::NextPart => h.next_part_uuid = value,
            Link::PrevPart => h.prev_part_uuid = value,
            Link::NextRepl => h.next_repl_uuid = value,
            Link::PrevRepl => h.prev_repl_uuid = value,
        }
    }
}

/// pmempool's `pool_hdr_valid`: not all zero and a valid checksum.
fn hdr_valid(h: &PoolHdr) -> bool {
    !h.is_zero() && h.checksum_ok()
}

/// What the header checks of one part know about where it is.
struct HeaderAt {
    /// `replica R part P: ` when the set has more than one file.
    prefix: String,
    single_repl: bool,
    single_part: bool,
    n: Neighbours,
}

/// The step type of [`Check::check_location`]'s later steps.
type HeaderStep<C> =
    fn(&mut C, &mut [Vec<PoolHdr>], (usize, usize), &HeaderAt, &mut bool) -> ControlFlow<Flow>;

/// Header index of the neighbours of header `p` of replica `r` (rings over
/// the header-carrying parts and over the replicas).
#[derive(Debug, Clone, Copy)]
struct Neighbours {
    next_part: (usize, usize),
    prev_part: (usize, usize),
    next_repl: (usize, usize),
    prev_repl: (usize, usize),
}

fn neighbours(hdrs: &[Vec<PoolHdr>], r: usize, p: usize) -> Neighbours {
    let nrep = hdrs.len().max(1);
    let nhdrs = hdrs.get(r).map_or(1, |v| v.len().max(1));
    Neighbours {
        next_part: (r, (p + 1) % nhdrs),
        prev_part: (r, (p + nhdrs - 1) % nhdrs),
        next_repl: ((r + 1) % nrep, 0),
        prev_repl: ((r + nrep - 1) % nrep, 0),
    }
}

fn hdr_at(hdrs: &[Vec<PoolHdr>], at: (usize, usize)) -> Option<&PoolHdr> {
    hdrs.get(at.0).and_then(|r| r.get(at.1))
}

struct Run<'a> {
    ui: &'a mut dyn CheckUi,
    opts: CheckOptions,
    messages: Vec<Message>,
    state: State,
    sync_required: bool,
    modified: Vec<Vec<bool>>,
    nfiles: usize,
    nparts: Vec<usize>,
    paths: Vec<Vec<PathBuf>>,
}

impl Run<'_> {
    fn emit(&mut self, kind: MessageKind, text: String) {
        let message = Message { kind, text };
        self.ui.message(&message);
        self.messages.push(message);
    }

    fn info(&mut self, text: String) {
        self.emit(MessageKind::Info, text);
    }

    /// A hard error: the check stops with `state`.
    fn fail(&mut self, state: State, text: String) -> Flow {
        self.state = state;
        self.emit(MessageKind::Error, text);
        Flow::Stop
    }

    /// Asks every question of one step, in order, as libpmempool queues
    /// them: with `-y` each problem becomes a progress message and the
    /// answer is yes.
    fn ask_all<T>(&mut self, questions: Vec<Question<T>>) -> Vec<(Answer, T)> {
        let mut answers = Vec::with_capacity(questions.len());
        for q in questions {
            if self.opts.always_yes {
                self.info(q.problem);
                answers.push((Answer::Yes, q.fix));
            } else {
                let text = format!("{}. {}", q.problem, q.ask);
                self.messages.push(Message {
                    kind: MessageKind::Question,
                    text: text.clone(),
                });
                let answer = self.ui.ask(&text);
                if answer == Answer::Invalid {
                    self.info("Answer must be either yes or no".to_string());
                }
                answers.push((answer, q.fix));
            }
        }
        answers
    }

    fn mark_modified(&mut self, r: usize, p: usize) {
        if let Some(m) = self.modified.get_mut(r).and_then(|v| v.get_mut(p)) {
            *m = true;
        }
    }

    fn path(&self, r: usize, p: usize) -> String {
        self.paths
            .get(r)
            .and_then(|v| v.get(p))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    fn part_prefix(&self, r: usize, p: usize) -> String {
        if self.nfiles > 1 {
            format!("replica {r} part {p}: ")
        } else {
            String::new()
        }
    }

    /// poolsync's own last step (docs/format.md §21, §24.3): headers whose
    /// feature masks differ, as an interrupted `feature -e|-d` leaves them.
    /// pmempool calls such a pool consistent although libpmemobj refuses a
    /// replica whose parts disagree; `feature` finishes the change, so
    /// check neither repairs it nor writes anything else.
    fn check_features(&mut self, health: &Health) {
        for i in &health.inconsistencies {
            let Inconsistency::FeaturesDiffer {
                first_replica,
                first_part,
                replica,
                part,
                feature,
            } = i
            else {
                continue;
            };
            let prefix = self.part_prefix(*replica, *part);
            let what = match feature {
                Some(f) => format!(
                    "{prefix}pool header features differ from replica {first_replica} part {first_part}'s in {f}: an interrupted feature change"
                ),
                None => format!(
                    "{prefix}pool header features differ from replica {first_replica} part {first_part}'s"
                ),
            };
            let state = if self.opts.repair {
                State::CannotRepair
            } else {
                State::NotConsistent
            };
            self.fail(state, what);
            return;
        }
    }

    /// The shutdown-state step (`check_sds.c`).
    fn check_sds(&mut self, hdrs: &mut [Vec<PoolHdr>]) -> Flow {
        let nrep = hdrs.len();
        let prefix = |r: usize| {
            if nrep > 1 {
                format!("replica {r}: ")
            } else {
                String::new()
            }
        };
        let healthy = |h: &PoolHdr| {
            if h.features.incompat & FEAT_SDS == 0 {
                h.sds.is_clean_zero()
            } else {
                !sds_adr_failure(&h.sds)
            }
        };
        let healthy_count = hdrs
            .iter()
            .filter(|r| r.first().is_some_and(healthy))
            .count();
        if healthy_count == nrep {
            for r in 0..nrep {
                self.info(format!("{}checking shutdown state", prefix(r)));
                self.info(format!("{}shutdown state correct", prefix(r)));
            }
            return Flow::Continue;
        }
        if healthy_count > 0 {
            // Some replicas are fine: the others need a sync, nothing is printed.
            self.sync_required = true;
            return Flow::Continue;
        }
        // No replica is healthy: in repair mode, reset the shutdown state of
        // replicas one at a time until one is healthy.
        let mut repaired = 0;
        for r in 0..nrep {
            let Some(h) = hdrs.get(r).and_then(|v| v.first()) else {
                continue;
            };
            let ignore_sds = h.features.incompat & FEAT_SDS == 0;
            self.info(format!("{}checking shutdown state", prefix(r)));
            let problem = if ignore_sds {
                "shutdown state is dirty"
            } else {
                "an ADR failure was detected - your pool might be corrupted"
            };
            if !self.opts.repair {
                return self.fail(State::NotConsistent, format!("{}{problem}", prefix(r)));
            }
            let ask = if ignore_sds {
                "Do you want to zero shutdown state?"
            } else {
                "Do you want to reset shutdown state at your own risk? If you have more then one replica you will have to synchronize your pool after this operation."
            };
            let answers = self.ask_all(vec![Question {
                problem: format!("{}{problem}", prefix(r)),
                ask: ask.to_string(),
                fix: (),
            }]);
            for (answer, ()) in answers {
                match answer {
                    Answer::Yes => {
                        self.info(format!("{}resetting pool_hdr.sds", prefix(r)));
                        if let Some(h) = hdrs.get_mut(r).and_then(|v| v.first_mut()) {
                            let was_valid = h.checksum_ok();
                            h.sds = Sds::ZERO;
                            // The SDS lies outside a 2K checksum; a 4K one covers
                            // it and is kept valid if it was.
                            if was_valid {
                                h.checksum = h.compute_checksum();
                            }
                        }
                        self.mark_modified(r, 0);
                        self.state = State::Repaired;
                        repaired += 1;
                    }
                    // libpmempool accepts "no" here and tries the next replica.
                    Answer::No => self.state = State::Repaired,
                    Answer::Invalid => {
                        return self.fail(State::NotConsistent, CANNOT_COMPLETE.to_string())
                    }
                }
            }
            if repaired > 0 {
                break;
            }
        }
        if repaired == 0 {
            return self.fail(State::NotConsistent, CANNOT_COMPLETE.to_string());
        }
        if repaired < nrep {
            self.sync_required = true;
        }
        Flow::Continue
    }

    /// The pool header step (`check_pool_hdr`, initial steps).
    fn check_headers(&mut self, hdrs: &[Vec<PoolHdr>], pool_type: Option<PoolType>) -> Flow {
        for (r, rep) in hdrs.iter().enumerate() {
            for (p, h) in rep.iter().enumerate() {
                let prefix = self.part_prefix(r, p);
                self.info(format!("{prefix}checking pool header"));
                if h.is_zero() {
                    if !self.opts.repair {
                        return self.fail(State::NotConsistent, format!("{prefix}empty pool hdr"));
                    }
                } else if h.checksum_ok() {
                    if h.pool_type().is_some() {
                        if let Some(problem) = crate::inspect::open_refusal(h) {
                            // libpmemobj would refuse it; a healthy replica's
                            // header replaces it (sync).
                            return self.fail(
                                State::NotConsistent,
                                format!(
                                    "{prefix}libpmemobj refuses to open the pool with this header: {problem}"
                                ),
                            );
                        }
                        self.info(format!("{prefix}pool header correct"));
                        continue;
                    }
                    if !self.opts.repair {
                        return self
                            .fail(State::NotConsistent, format!("{prefix}invalid signature"));
                    }
                    self.info(format!("{prefix}invalid signature"));
                } else {
                    if !self.opts.repair {
                        return self.fail(
                            State::NotConsistent,
                            format!("{prefix}incorrect pool header"),
                        );
                    }
                    self.info(format!("{prefix}incorrect pool header"));
                }
                // Repair of a damaged header: libpmempool repairs blk and log
                // headers only.
                return match pool_type {
                    None => self.fail(
                        State::CannotRepair,
                        "cannot determine pool type".to_string(),
                    ),
                    Some(_) => self.fail(
                        State::CannotRepair,
                        "the repair of pmemobj pools is not supported".to_string(),
                    ),
                };
            }
        }
        Flow::Continue
    }

    /// The UUID step (`check_pool_hdr_uuids`) over every header-carrying part.
    fn check_uuids(&mut self, hdrs: &mut [Vec<PoolHdr>]) -> Flow {
        let nrep = hdrs.len();
        let mut valid_puuid: Option<RawUuid> = None;
        for r in 0..nrep {
            let nh = hdrs.get(r).map_or(0, Vec::len);
            for p in 0..nh {
                if let Flow::Stop = self.check_location(hdrs, r, p, &mut valid_puuid) {
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    fn check_location(
        &mut self,
        hdrs: &mut [Vec<PoolHdr>],
        r: usize,
        p: usize,
        valid_puuid: &mut Option<RawUuid>,
    ) -> Flow {
        let Some(h) = hdrs.get(r).and_then(|v| v.get(p)) else {
            return Flow::Continue;
        };
        let mut valid = hdr_valid(h);
        let ctx = HeaderAt {
            prefix: self.part_prefix(r, p),
            single_repl: hdrs.len() == 1,
            single_part: self.nparts.get(r).copied() == Some(1),
            n: neighbours(hdrs, r, p),
        };
        // Each step runs unless the header is valid and alone in the set
        // (nothing to compare with); the checksum step whenever the header
        // is not valid.
        let whole = ctx.single_repl && ctx.single_part;
        // (step, whether it also runs on a valid header that is not alone)
        let steps = [
            (Self::fix_uuid as HeaderStep<Self>, true),
            (Self::fix_links, true),
            (Self::fix_checksum, false),
        ];
        if !(valid && whole) {
            if let ControlFlow::Break(flow) =
                self.fix_poolset_uuid(hdrs, (r, p), &ctx, &mut valid, valid_puuid)
            {
                return flow;
            }
        }
        for (step, unless_alone) in steps {
            let due = !valid || (unless_alone && !whole);
            if !due {
                continue;
            }
            if let ControlFlow::Break(flow) = step(self, hdrs, (r, p), &ctx, &mut valid) {
                return flow;
            }
        }
        Flow::Continue
    }

    /// pool_hdr_poolset_uuid_find: the pool set UUID every header must carry.
    fn fix_poolset_uuid(
        &mut self,
        hdrs: &mut [Vec<PoolHdr>],
        (r, p): (usize, usize),
        ctx: &HeaderAt,
        valid: &mut bool,
        valid_puuid: &mut Option<RawUuid>,
    ) -> ControlFlow<Flow> {
        let prefix = ctx.prefix.as_str();
        if (r, p) == (0, 0) {
            if ctx.single_part && ctx.single_repl {
                // Nothing to compare with.
            } else {
                match self.find_poolset_uuid(hdrs, prefix) {
                    Ok(u) => *valid_puuid = Some(u),
                    Err(flow) => return ControlFlow::Break(flow),
                }
            }
        }
        if let Some(puuid) = *valid_puuid {
            if hdrs
                .get(r)
                .and_then(|v| v.get(p))
                .is_some_and(|h| h.poolset_uuid != puuid)
            {
                let set = |h: &mut PoolHdr, u: RawUuid| h.poolset_uuid = u;
                let field = ("pool_hdr.poolset_uuid", set as fn(&mut PoolHdr, RawUuid));
                self.fix_field(hdrs, (r, p), prefix, field, puuid, valid)?;
            }
        }

        ControlFlow::Continue(())
    }

    /// A UUID field of part (r, p) is wrong: asks to set it to `value`,
    /// which a valid part file gives, and sets it (`field` names it and
    /// sets it).
    fn fix_field(
        &mut self,
        hdrs: &mut [Vec<PoolHdr>],
        (r, p): (usize, usize),
        prefix: &str,
        (name, set): (&str, fn(&mut PoolHdr, RawUuid)),
        value: RawUuid,
        valid: &mut bool,
    ) -> ControlFlow<Flow> {
        let problem = format!("{prefix}invalid {name}");
        if !self.opts.repair {
            return ControlFlow::Break(self.fail(State::NotConsistent, problem));
        }
        let ask = format!(
            "Do you want to set it to {} from a valid part file?",
            value.to_canonical()
        );
        let answers = self.ask_all(vec![Question {
            problem,
            ask,
            fix: value,
        }]);
        self.apply_fixes(answers, (r, p), |check, value| {
            check.info(format!(
                "{prefix}setting {name} to {}",
                value.to_canonical()
            ));
            if let Some(h) = hdrs.get_mut(r).and_then(|v| v.get_mut(p)) {
                set(h, value);
                *valid = hdr_valid(h);
            }
            true
        })
    }

    /// Carries out the fixes the user agreed to: `apply` makes each one
    /// (returning `false` when there was nothing to change after all), and
    /// part (r, p) is then written back. Any answer but yes ends the check
    /// as not consistent, as pmempool does.
    fn apply_fixes<T>(
        &mut self,
        answers: Vec<(Answer, T)>,
        (r, p): (usize, usize),
        mut apply: impl FnMut(&mut Self, T) -> bool,
    ) -> ControlFlow<Flow> {
        for (answer, fix) in answers {
            if answer != Answer::Yes {
                return ControlFlow::Break(
                    self.fail(State::NotConsistent, CANNOT_COMPLETE.to_string()),
                );
            }
            if apply(self, fix) {
                self.mark_modified(r, p);
                self.state = State::Repaired;
            }
        }
        ControlFlow::Continue(())
    }

    /// pool_hdr_uuid_find: the part's own UUID, as its neighbours name it.
    fn fix_uuid(
        &mut self,
        hdrs: &mut [Vec<PoolHdr>],
        (r, p): (usize, usize),
        ctx: &HeaderAt,
        valid: &mut bool,
    ) -> ControlFlow<Flow> {
        let prefix = ctx.prefix.as_str();
        let n = &ctx.n;
        let Some(h) = hdrs.get(r).and_then(|v| v.get(p)) else {
            return ControlFlow::Break(Flow::Continue);
        };
        let sources = [
            (n.next_part, Link::PrevPart),
            (n.prev_part, Link::NextPart),
            (n.next_repl, Link::PrevRepl),
            (n.prev_repl, Link::NextRepl),
        ];
        let mut valid_uuid = if *valid { Some(h.uuid) } else { None };
        let values: Vec<(Option<RawUuid>, bool)> = sources
            .iter()
            .map(|&(at, link)| {
                let nh = hdr_at(hdrs, at);
                (nh.map(|x| link.get(x)), nh.is_some_and(hdr_valid))
            })
            .collect();
        let mut common = values.first().and_then(|v| v.0);
        for (i, &(value, neighbour_valid)) in values.iter().enumerate() {
            if i > 0 && common.is_some() && common != value {
                common = None;
            }
            // Replica links are compared for part 0 only.
            if i >= 2 && p != 0 {
                continue;
            }
            if !neighbour_valid {
                continue;
            }
            match valid_uuid {
                None => valid_uuid = value,
                Some(u) if Some(u) != value => {
                    return ControlFlow::Break(self.fail(
                        State::NotConsistent,
                        format!("{prefix}ambiguous pool_hdr.uuid"),
                    ));
                }
                Some(_) => {}
            }
        }
        if valid_uuid.is_none() {
            valid_uuid = common;
        }
        match valid_uuid {
            Some(u) if u != h.uuid => {
                let set = |h: &mut PoolHdr, u: RawUuid| h.uuid = u;
                let field = ("pool_hdr.uuid", set as fn(&mut PoolHdr, RawUuid));
                self.fix_field(hdrs, (r, p), prefix, field, u, valid)?;
            }
            Some(_) => {}
            None => {
                // No valid header names this part: libpmempool would
                // regenerate its UUID with -a. Headers reach this step
                // only when the header step found them valid, so this
                // is reported rather than guessed at.
                let problem = format!("{prefix}invalid pool_hdr.uuid");
                if !self.opts.repair {
                    return ControlFlow::Break(self.fail(State::NotConsistent, problem));
                }
                self.info(format!("{prefix}{REQUIRE_ADVANCED}"));
                return ControlFlow::Break(self.fail(State::CannotRepair, problem));
            }
        }

        ControlFlow::Continue(())
    }

    /// pool_hdr_uuid_links: the links to the neighbours.
    fn fix_links(
        &mut self,
        hdrs: &mut [Vec<PoolHdr>],
        (r, p): (usize, usize),
        ctx: &HeaderAt,
        valid: &mut bool,
    ) -> ControlFlow<Flow> {
        let prefix = ctx.prefix.as_str();
        let n = &ctx.n;
        let Some(h) = hdrs.get(r).and_then(|v| v.get(p)) else {
            return ControlFlow::Break(Flow::Continue);
        };
        let targets = [n.next_part, n.prev_part, n.next_repl, n.prev_repl];
        let mut questions = Vec::new();
        for (link, at) in Link::ALL.into_iter().zip(targets) {
            let Some(target) = hdr_at(hdrs, at).map(|x| x.uuid) else {
                continue;
            };
            if link.get(h) == target {
                continue;
            }
            let problem = format!("{prefix}invalid {}", link.field());
            if !self.opts.repair {
                return ControlFlow::Break(self.fail(State::NotConsistent, problem));
            }
            questions.push(Question {
                problem,
                ask: "Do you want to set it to a valid value?".to_string(),
                fix: (link, at),
            });
        }
        let answers = self.ask_all(questions);
        self.apply_fixes(answers, (r, p), |check, (link, at)| {
            let Some(target) = hdr_at(hdrs, at).map(|x| x.uuid) else {
                return false;
            };
            check.info(format!(
                "{prefix}setting {} to {}",
                link.field(),
                target.to_canonical()
            ));
            if let Some(h) = hdrs.get_mut(r).and_then(|v| v.get_mut(p)) {
                link.set(h, target);
                *valid = hdr_valid(h);
            }
            true
        })
    }

    /// pool_hdr_checksum: the checksum.
    fn fix_checksum(
        &mut self,
        hdrs: &mut [Vec<PoolHdr>],
        (r, p): (usize, usize),
        ctx: &HeaderAt,
        _valid: &mut bool,
    ) -> ControlFlow<Flow> {
        let prefix = ctx.prefix.as_str();
        let problem = format!("{prefix}invalid pool_hdr.checksum");
        if !self.opts.repair {
            return ControlFlow::Break(self.fail(State::NotConsistent, problem));
        }
        if !self.opts.advanced {
            self.info(format!("{prefix}{REQUIRE_ADVANCED}"));
            return ControlFlow::Break(self.fail(State::CannotRepair, problem));
        }
        let answers = self.ask_all(vec![Question {
            problem,
            ask: "Do you want to regenerate checksum?".to_string(),
            fix: (),
        }]);
        self.apply_fixes(answers, (r, p), |check, ()| {
            if let Some(h) = hdrs.get_mut(r).and_then(|v| v.get_mut(p)) {
                h.checksum = h.compute_checksum();
                let sum = h.checksum;
                check.info(format!("{prefix}setting pool_hdr.checksum to {sum:#x}"));
            }
            true
        })
    }

    /// The poolset UUID every valid header must carry (looked up at replica 0
    /// part 0): the one all valid headers share, or else the one all headers share.
    fn find_poolset_uuid(&mut self, hdrs: &[Vec<PoolHdr>], prefix: &str) -> Result<RawUuid, Flow> {
        let first = hdrs.first().and_then(|v| v.first()).map(|h| h.poolset_uuid);
        let mut common = first;
        let mut valid_puuid: Option<(RawUuid, (usize, usize))> = None;
        for (r, rep) in hdrs.iter().enumerate() {
            for (p, h) in rep.iter().enumerate() {
                if common.is_some() && common != Some(h.poolset_uuid) {
                    common = None;
                }
                if !hdr_valid(h) {
                    continue;
                }
                match valid_puuid {
                    None => valid_puuid = Some((h.poolset_uuid, (r, p))),
                    Some((u, (r0, p0))) if u != h.poolset_uuid => {
                        // pmempool's message names no part; the detail does.
                        let text = format!(
                            "the poolset contains part files from various poolsets \
                             (replica {r} part {p}, {}: pool_hdr.poolset_uuid {} differs from {} \
                             of replica {r0} part {p0})",
                            self.path(r, p),
                            h.poolset_uuid.to_canonical(),
                            u.to_canonical()
                        );
                        return Err(self.fail(State::NotConsistent, text));
                    }
                    Some(_) => {}
                }
            }
        }
        let valid_puuid = valid_puuid.map(|(u, _)| u);
        if let Some(u) = valid_puuid.or(common) {
            return Ok(u);
        }
        let problem = format!("{prefix}no common pool_hdr.poolset_uuid");
        if !self.opts.repair {
            return Err(self.fail(State::NotConsistent, problem));
        }
        // libpmempool would regenerate the poolset UUID with -a; valid
        // headers always carry one by now, so this is reported instead.
        self.info(format!("{prefix}{REQUIRE_ADVANCED}"));
        Err(self.fail(State::CannotRepair, problem))
    }
}
