//! Staged transforms on the simulated storage: adding and removing
//! `SINGLEHDR` and reshaping replicas onto their own files, rebuilt from a
//! replica that stays or from a temporary copy, with a journal.
//!
//! Every change an uninterrupted run makes is a crash point: every create
//! (before and after the file appears), write, flush, fence, chmod, remove
//! and directory sync (the events are recorded, so the ones around the
//! journal and the temporary copy are known by name). After a crash and a
//! reboot (power failure, killed process, or a torn mix), either the old
//! pool set file opens a healthy source with the original data, or the
//! transform is under way; in both cases running the same transform again,
//! with no manual step, ends where an uninterrupted run ends, and a further
//! run has nothing to do. Until the journal and the temporary copy are
//! durable, the source's files are untouched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use poolsync_engine::sync::{sync, NoProgress, SyncOptions};
use poolsync_engine::transform::{
    journal_path, transform, DataFrom, Operation, TransformOptions, TransformOutcome,
    JOURNAL_SUFFIX, TEMP_SUFFIX,
};
use poolsync_engine::Error;
use poolsync_pmem::sim::{EventScope, SimFile, SimImage, SimStorage, Survival};
use poolsync_pmem::{Access, Error as PmemError, Meta, PartFile, Storage};
use poolsync_poolset::{PoolSet, Replica};

use crate::sync_crash::Fixture;
use crate::transform::{healthy, normalized, options, read_logical};

const M: u64 = 1 << 20;
const DST: &str = "/pool/dst.set";
const OTHER: &str = "/pool/other.set";
const PAGE: u64 = 4096;
/// Reboot images remembered to skip re-checking the same state.
const RECENT: usize = 4;

// --- a storage that names its events ---

/// One event of a run: every change it makes ([`EventScope::EveryChange`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    /// The file appears, empty and of mode 0.
    Create {
        path: PathBuf,
    },
    /// It is allocated.
    Allocate {
        path: PathBuf,
    },
    Write {
        path: PathBuf,
        off: u64,
    },
    Flush {
        path: PathBuf,
        off: u64,
    },
    Fence {
        path: PathBuf,
    },
    Chmod {
        path: PathBuf,
    },
    Remove {
        path: PathBuf,
    },
    DirSync {
        dir: PathBuf,
    },
}

impl Ev {
    /// The file the event changes (none for a directory sync).
    fn file(&self) -> Option<&PathBuf> {
        match self {
            Ev::Create { path }
            | Ev::Allocate { path }
            | Ev::Write { path, .. }
            | Ev::Flush { path, .. }
            | Ev::Fence { path }
            | Ev::Chmod { path }
            | Ev::Remove { path } => Some(path),
            Ev::DirSync { .. } => None,
        }
    }
}

type Log = Arc<Mutex<Vec<Ev>>>;

fn lock(log: &Log) -> MutexGuard<'_, Vec<Ev>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`SimStorage`] (crashing at every change) that records each event that
/// completes, in the order (and so with the numbers) the simulation counts
/// them.
#[derive(Debug, Clone)]
struct Recorder {
    inner: SimStorage,
    log: Log,
}

#[derive(Debug)]
struct RecordedFile {
    inner: SimFile,
    log: Log,
}

impl PartFile for RecordedFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn len(&self) -> Result<u64, PmemError> {
        self.inner.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), PmemError> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), PmemError> {
        self.inner.write_at(offset, data)?;
        let path = self.inner.path().to_path_buf();
        lock(&self.log).push(Ev::Write { path, off: offset });
        Ok(())
    }
    fn flush(&self, off: u64, len: u64) -> Result<(), PmemError> {
        self.inner.flush(off, len)?;
        let path = self.inner.path().to_path_buf();
        lock(&self.log).push(Ev::Flush { path, off });
        Ok(())
    }
    fn fence(&self) -> Result<(), PmemError> {
        self.inner.fence()?;
        let path = self.inner.path().to_path_buf();
        lock(&self.log).push(Ev::Fence { path });
        Ok(())
    }
    fn ctime(&self) -> Result<u64, PmemError> {
        self.inner.ctime()
    }
}

impl Recorder {
    fn wrap(&self, inner: SimFile) -> RecordedFile {
        RecordedFile {
            inner,
            log: Arc::clone(&self.log),
        }
    }
}

impl Storage for Recorder {
    type File = RecordedFile;
    fn stat(&self, path: &Path) -> Result<Option<Meta>, PmemError> {
        self.inner.stat(path)
    }
    fn open(&self, path: &Path, access: Access) -> Result<RecordedFile, PmemError> {
        Ok(self.wrap(self.inner.open(path, access)?))
    }
    fn create(&self, path: &Path, size: u64) -> Result<RecordedFile, PmemError> {
        let file = self.wrap(self.inner.create(path, size)?);
        let path = path.to_path_buf();
        let mut log = lock(&self.log);
        log.push(Ev::Create { path: path.clone() });
        log.push(Ev::Allocate { path });
        Ok(file)
    }
    fn remove(&self, path: &Path) -> Result<(), PmemError> {
        self.inner.remove(path)?;
        let path = path.to_path_buf();
        lock(&self.log).push(Ev::Remove { path });
        Ok(())
    }
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), PmemError> {
        self.inner.set_mode(path, mode)?;
        let path = path.to_path_buf();
        lock(&self.log).push(Ev::Chmod { path });
        Ok(())
    }
    fn clock(&self) -> &dyn poolsync_pmem::Clock {
        self.inner.clock()
    }
    fn current_dir(&self) -> Result<PathBuf, PmemError> {
        self.inner.current_dir()
    }
    fn fsync_dir(&self, dir: &Path) -> Result<(), PmemError> {
        self.inner.fsync_dir(dir)?;
        let dir = dir.to_path_buf();
        lock(&self.log).push(Ev::DirSync { dir });
        Ok(())
    }
    fn free_space(&self, dir: &Path) -> Result<Option<u64>, PmemError> {
        self.inner.free_space(dir)
    }
}

// --- pool set files and file checks ---

type Layout<'a> = &'a [&'a [(&'a str, u64)]];

/// Writes a pool set file (part paths and MiB), replacing one that exists.
fn put_set(s: &SimStorage, path: &Path, single_hdr: bool, replicas: Layout<'_>) -> PoolSet {
    let mut text = String::from("PMEMPOOLSET\n");
    if single_hdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    for (r, parts) in replicas.iter().enumerate() {
        if r > 0 {
            text.push_str("REPLICA\n");
        }
        for (p, mib) in *parts {
            text.push_str(&format!("{mib}M {p}\n"));
        }
    }
    if s.stat(path).expect("stat").is_some() {
        s.remove(path).expect("replace set file");
    }
    s.insert_file(path, text.as_bytes(), 0o644)
        .expect("set file");
    poolsync_poolset::parse(&text).expect("parse")
}

fn part_paths(set: &PoolSet) -> Vec<PathBuf> {
    set.replicas
        .iter()
        .flat_map(|r| match r {
            Replica::Local { parts, .. } => parts.iter().map(|p| PathBuf::from(&p.path)).collect(),
            Replica::Remote { .. } => Vec::new(),
        })
        .collect()
}

fn temp_of(set: &PoolSet) -> PathBuf {
    let master = part_paths(set).into_iter().next().expect("a part");
    let name = master.file_name().expect("name").to_string_lossy();
    master.with_file_name(format!(".{name}{TEMP_SUFFIX}"))
}

/// Logical `[offset, offset+len)` of replica `r` of `set` in `image`
/// (as [`read_logical`] reads it from a storage, without copying files).
fn logical(image: &SimImage, set: &PoolSet, r: usize, offset: u64, len: u64) -> Vec<u8> {
    let extents = set.extents(r).expect("extents");
    let Replica::Local { parts, .. } = &set.replicas[r] else {
        panic!("remote");
    };
    let mut out = Vec::with_capacity(len as usize);
    for piece in poolsync_poolset::map_range(&extents, offset, len) {
        let file = image.get(Path::new(&parts[piece.part].path)).expect("part");
        let at = piece.file_offset as usize;
        out.extend_from_slice(&file.bytes[at..at + piece.len as usize]);
    }
    out
}

fn exists(s: &SimStorage, path: &Path) -> bool {
    s.stat(path).expect("stat").is_some()
}

/// Where two images differ: each file that differs, with the first ranges.
fn image_diff(a: &SimImage, b: &SimImage) -> String {
    let mut out = Vec::new();
    for (path, fa) in a.files() {
        match b.get(path) {
            None => out.push(format!("{} only left", path.display())),
            Some(fb) if fa.mode != fb.mode => {
                out.push(format!(
                    "{} mode {:o}/{:o}",
                    path.display(),
                    fa.mode,
                    fb.mode
                ));
            }
            Some(fb) if fa.bytes != fb.bytes => {
                let mut ranges: Vec<(usize, usize)> = Vec::new();
                for (i, (x, y)) in fa.bytes.iter().zip(&fb.bytes).enumerate() {
                    if x != y {
                        match ranges.last_mut() {
                            Some(r) if r.1 + 8 >= i => r.1 = i,
                            _ => ranges.push((i, i)),
                        }
                    }
                }
                ranges.truncate(8);
                out.push(format!(
                    "{} differs (len {}/{}, at {ranges:?})",
                    path.display(),
                    fa.bytes.len(),
                    fb.bytes.len()
                ));
            }
            Some(_) => {}
        }
    }
    for path in b.files().keys() {
        if a.get(path).is_none() {
            out.push(format!("{} only right", path.display()));
        }
    }
    out.join("; ")
}

// --- re-running as told ---

/// The command in the first backquoted span of a refusal, split in words.
fn named_command(msg: &str) -> Option<Vec<String>> {
    let start = msg.find('`')? + 1;
    let len = msg.get(start..)?.find('`')?;
    let words: Vec<String> = msg
        .get(start..start + len)?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let known = matches!(
        words.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ["rm", _] | ["poolsync", "sync", _] | ["poolsync", "transform", _, _]
    );
    known.then_some(words)
}

/// Carries out a command a refusal named.
fn follow(s: &SimStorage, words: &[String]) {
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["rm", path] => {
            s.remove(Path::new(path)).expect("rm as told");
            s.fsync_parent(Path::new(path)).expect("sync dir");
        }
        ["poolsync", "sync", set] => {
            let opts = SyncOptions {
                threads: 1,
                uuids: options().uuids,
                ..SyncOptions::default()
            };
            sync(s, Path::new(set), &opts, &NoProgress).expect("sync as told");
        }
        ["poolsync", "transform", from, to] => {
            transform(s, Path::new(from), Path::new(to), &options(), &NoProgress)
                .expect("transform as told");
        }
        _ => panic!("unknown command {words:?}"),
    }
}

/// Runs the transform, which must succeed at once: no crash point may
/// need a manual step.
fn finish(s: &SimStorage, src: &Path, dst: &Path, what: &str) -> TransformOutcome {
    transform(s, src, dst, &options(), &NoProgress)
        .unwrap_or_else(|e| panic!("{what}: the re-run failed: {e}"))
}

// --- the crash-point harness ---

/// A staged transform of `fx`'s pool set into a target layout.
struct Case<'a> {
    name: &'a str,
    fx: Fixture,
    /// The source set as it is on the storage (it may differ from
    /// `fx.set` when the fixture was transformed before the test).
    src_set: PoolSet,
    single_hdr: bool,
    target: Layout<'a>,
    /// Whether the data is staged into a temporary copy.
    staged: bool,
    /// A torn survival at every `torn_every`-th crash point, two around
    /// the marks.
    torn_every: u64,
}

/// What an uninterrupted run did and left.
struct Reference {
    base: SimStorage,
    dset: PoolSet,
    expected: SimImage,
    log: Vec<Ev>,
    pool_size: u64,
    original: Vec<u8>,
    /// A crash up to this event leaves the source's files as they were:
    /// the directory sync that makes the journal durable, or (when a
    /// temporary copy is used) the one after the fence of its header.
    protect: u64,
    /// Named events, for the crash-point selection and the report.
    marks: Vec<(&'static str, u64)>,
}

impl Case<'_> {
    fn src(&self) -> &Path {
        &self.fx.set_path
    }

    /// Runs the transform uninterrupted on a copy of the fixture, recording
    /// its events, and checks its end state.
    fn reference(&self) -> Reference {
        let base = self.fx.copy();
        base.set_event_scope(EventScope::EveryChange);
        let dset = put_set(&base, Path::new(DST), self.single_hdr, self.target);
        let pool = self.src_set.pool_size().expect("pool size");
        let rec = Recorder {
            inner: base.after_crash_with(Survival::Everything),
            log: Arc::default(),
        };
        let outcome = transform(&rec, self.src(), Path::new(DST), &options(), &NoProgress)
            .unwrap_or_else(|e| panic!("{}: uninterrupted run: {e}", self.name));
        let plan = &outcome.plan;
        let staging = plan.staging.as_ref().expect("a staged transform");
        assert_eq!(staging.temporary.is_some(), self.staged, "{}", self.name);
        assert_eq!(
            staging.data_from == DataFrom::Temporary,
            self.staged,
            "{}",
            self.name
        );
        assert!(!staging.resumed);
        let log = lock(&rec.log).clone();
        assert_eq!(log.len() as u64, rec.inner.events(), "every event recorded");
        let pool_size = plan.pool_size;
        assert!(pool_size <= pool);
        let original = read_logical(&base, &self.src_set, 0, PAGE, pool_size - PAGE);
        for r in 1..self.src_set.replicas.len() {
            let data = read_logical(&base, &self.src_set, r, PAGE, pool_size - PAGE);
            assert!(data == original, "{}: fixture replicas differ", self.name);
        }
        let journal = journal_path(self.src());
        let temp = temp_of(&self.src_set);
        let position = |from: usize, pred: &dyn Fn(&Ev) -> bool| {
            log.iter()
                .skip(from)
                .position(pred)
                .map(|i| (i + from) as u64)
        };
        let dir_sync = |from: u64| {
            position(from as usize, &|e| matches!(e, Ev::DirSync { .. })).expect("a directory sync")
        };
        let journal_fence = position(0, &|e| {
            *e == Ev::Fence {
                path: journal.clone(),
            }
        })
        .expect("the journal is fenced");
        let journal_durable = dir_sync(journal_fence);
        let mut marks = vec![
            ("journal fence", journal_fence),
            ("journal durable", journal_durable),
        ];
        let mut protect = journal_durable;
        if self.staged {
            let header_flush = position(0, &|e| {
                *e == Ev::Flush {
                    path: temp.clone(),
                    off: 0,
                }
            })
            .expect("the temporary copy's header is flushed");
            let header_fence = position(header_flush as usize, &|e| {
                *e == Ev::Fence { path: temp.clone() }
            })
            .expect("and fenced");
            protect = dir_sync(header_fence);
            marks.push(("temp header fence", header_fence));
            marks.push(("temp durable", protect));
        } else {
            assert!(
                !log.iter()
                    .any(|e| matches!(e, Ev::Flush { path, .. } if *path == temp)),
                "{}: a temporary copy written",
                self.name
            );
        }
        // No source part is changed before that point.
        let parts = part_paths(&self.src_set);
        let first_part_event = log
            .iter()
            .position(|e| e.file().is_some_and(|path| parts.contains(path)));
        if let Some(first) = first_part_event {
            assert!(
                first as u64 > protect,
                "{}: a part written early",
                self.name
            );
            marks.push(("first part write", first as u64));
        }
        let reference = Reference {
            expected: normalized(&rec.inner),
            base,
            dset,
            log,
            pool_size,
            original,
            protect,
            marks,
        };
        self.check_end(&rec.inner, &reference, "uninterrupted");
        // A run after completion, dry or not, finds nothing to do.
        let before = rec.inner.image();
        for opts in [dry_run(), options()] {
            let again = transform(&rec.inner, self.src(), Path::new(DST), &opts, &NoProgress)
                .unwrap_or_else(|e| panic!("{}: run after completion: {e}", self.name));
            assert!(again.plan.is_noop(), "{}: {:?}", self.name, again.plan);
            assert_eq!(again.plan.operation, Operation::Finish);
            assert!(
                rec.inner.image() == before,
                "{}: a finished transform wrote",
                self.name
            );
        }
        reference
    }

    /// The end state of a completed run: the uninterrupted run's.
    fn check_end(&self, s: &SimStorage, reference: &Reference, what: &str) {
        let name = self.name;
        assert!(
            healthy(s, Path::new(DST)),
            "{name} {what}: target not healthy"
        );
        let now = normalized(s);
        let len = reference.pool_size - PAGE;
        for r in 0..reference.dset.replicas.len() {
            assert!(
                logical(&now, &reference.dset, r, PAGE, len) == reference.original,
                "{name} {what}: replica {r} lost data"
            );
        }
        let journal = journal_path(self.src());
        assert!(!exists(s, &journal), "{name} {what}: journal left");
        let temp = temp_of(&self.src_set);
        assert!(!exists(s, &temp), "{name} {what}: temporary copy left");
        // Nothing else is left: the old parts no replica uses are gone.
        let mut files = part_paths(&reference.dset);
        files.extend([self.src().to_path_buf(), PathBuf::from(DST)]);
        files.sort();
        assert_eq!(s.paths(), files, "{name} {what}: other files");
        assert!(
            now == reference.expected,
            "{name} {what}: ended elsewhere: {}",
            image_diff(&now, &reference.expected)
        );
    }

    /// Crash points: the first and last 20, every `every`-th, and those
    /// around the marks (so all of them when there are few); of those, the
    /// `share.0`-th of `share.1` contiguous shares.
    fn crash_points(&self, reference: &Reference, every: u64, share: (usize, usize)) -> Vec<u64> {
        let n = reference.log.len() as u64;
        let all: Vec<u64> = (0..n)
            .filter(|&k| {
                k < 20
                    || k + 20 >= n
                    || k % every == 0
                    || reference.marks.iter().any(|&(_, m)| k.abs_diff(m) <= 3)
            })
            .collect();
        let (index, count) = share;
        let len = all.len();
        all[len * index / count..len * (index + 1) / count].to_vec()
    }

    /// Crashes the transform at the crash points of `share` (see
    /// [`Case::crash_points`]) and checks each reboot.
    fn run(&self, every: u64, share: (usize, usize)) {
        let reference = self.reference();
        let src = self.src();
        let dst = Path::new(DST);
        let points = self.crash_points(&reference, every, share);
        let src_parts = part_paths(&self.src_set);
        let mut source_files = src_parts.clone();
        source_files.push(src.to_path_buf());
        let original_files: Vec<_> = source_files
            .iter()
            .map(|p| {
                reference
                    .base
                    .image()
                    .get(p)
                    .cloned()
                    .map(|f| (f.bytes, f.mode))
            })
            .collect();
        let mut recent: Vec<SimImage> = Vec::new();
        let mut stats = Stats::default();
        for &k in &points {
            let crashed = reference.base.after_crash_with(Survival::Everything);
            crashed.crash_after(k);
            match transform(&crashed, src, dst, &options(), &NoProgress) {
                Err(Error::Storage(PmemError::SimulatedCrash { event })) => assert_eq!(event, k),
                other => panic!("{}: crash at {k}: got {other:?}", self.name),
            }
            let near_mark = reference.marks.iter().any(|&(_, m)| k.abs_diff(m) <= 2);
            let mut survivals = vec![Survival::Durable, Survival::Everything];
            if near_mark || k % self.torn_every == 0 {
                survivals.push(Survival::Torn { seed: k });
            }
            if near_mark {
                survivals.push(Survival::Torn { seed: k ^ 0x5eed });
            }
            for survival in survivals {
                let what = format!("event {k} {:?} {survival:?}", reference.log[k as usize]);
                let rebooted = crashed.after_crash_with(survival);
                let image = rebooted.image();
                // The same files as a reboot just checked: the same outcome
                // (the runs are deterministic).
                if recent.contains(&image) {
                    stats.same += 1;
                    continue;
                }
                stats.runs += 1;
                // (a) Before the copy is safe, the source is untouched.
                if k <= reference.protect {
                    for (path, before) in source_files.iter().zip(&original_files) {
                        let now = image.get(path).map(|f| (f.bytes.clone(), f.mode));
                        assert!(
                            now == *before,
                            "{} {what}: {} changed before the journal and copy were durable",
                            self.name,
                            path.display()
                        );
                    }
                }
                let src_ok = healthy(&rebooted, src);
                if src_ok {
                    stats.source_healthy += 1;
                    for r in 0..self.src_set.replicas.len() {
                        let len = reference.pool_size - PAGE;
                        assert!(
                            logical(&image, &self.src_set, r, PAGE, len) == reference.original,
                            "{} {what}: the source opens healthy, but replica {r} lost data",
                            self.name
                        );
                    }
                }
                // (b) The re-run alone finishes, as the uninterrupted run did.
                let outcome = finish(&rebooted, src, dst, &format!("{} {what}", self.name));
                let resumed = outcome.plan.staging.as_ref().is_some_and(|s| s.resumed);
                if src_ok {
                    assert!(!resumed, "{} {what}: a healthy source resumed", self.name);
                } else {
                    stats.resumed += 1;
                }
                self.check_end(&rebooted, &reference, &what);
                let again = transform(&rebooted, src, dst, &options(), &NoProgress)
                    .unwrap_or_else(|e| panic!("{} {what}: third run: {e}", self.name));
                assert!(
                    again.plan.is_noop(),
                    "{} {what}: third run not a no-op",
                    self.name
                );
                if recent.len() == RECENT {
                    recent.remove(0);
                }
                recent.push(image);
            }
        }
        eprintln!(
            "{} {share:?}: {} events, {} crash points, marks {:?}; {} re-runs ({} skipped as seen), {} with a healthy source, {} resumed; none needed a manual step",
            self.name,
            reference.log.len(),
            points.len(),
            reference.marks,
            stats.runs,
            stats.same,
            stats.source_healthy,
            stats.resumed,
        );
    }
}

#[derive(Default)]
struct Stats {
    runs: u64,
    same: u64,
    source_healthy: u64,
    resumed: u64,
}

// --- the scenarios ---

const THREE_PARTS: Layout<'static> = &[&[("/pool/r0p0", 8), ("/pool/r0p1", 8), ("/pool/r0p2", 8)]];

fn add_singlehdr_case() -> Case<'static> {
    let fx = Fixture::new(&[&[8, 8, 8]], false);
    Case {
        name: "add SINGLEHDR",
        src_set: fx.set.clone(),
        fx,
        single_hdr: true,
        target: THREE_PARTS,
        staged: true,
        torn_every: 4,
    }
}

const TWO_BY_TWO: Layout<'static> = &[
    &[("/pool/r0p0", 8), ("/pool/r0p1", 9)],
    &[("/pool/r1p0", 9), ("/pool/r1p1", 8)],
];

/// A `SINGLEHDR` pool of two replicas of two parts that is smaller than
/// either replica without `SINGLEHDR` (created with a smaller third
/// replica, which is then removed): removing the option needs a page per
/// part after the first.
fn remove_singlehdr_case() -> Case<'static> {
    let fx = Fixture::new(&[&[8, 9], &[9, 8], &[12]], true);
    let two = Path::new("/pool/two.set");
    put_set(&fx.base, two, true, TWO_BY_TWO);
    transform(&fx.base, &fx.set_path, two, &options(), &NoProgress).expect("remove replica 2");
    let src_set = put_set(&fx.base, &fx.set_path, true, TWO_BY_TWO);
    fx.base.remove(two).expect("rm");
    fx.base.fsync_parent(two).expect("sync dir");
    assert!(healthy(&fx.base, &fx.set_path));
    Case {
        name: "remove SINGLEHDR",
        src_set,
        fx,
        single_hdr: false,
        target: TWO_BY_TWO,
        staged: true,
        torn_every: 4,
    }
}

const RESIZE_IN_PLACE: Layout<'static> = &[
    &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
    &[("/pool/r1p0", 8), ("/pool/r1p1", 9)],
];

fn reshape_stable_case() -> Case<'static> {
    let fx = Fixture::new(&[&[8, 8], &[16]], false);
    Case {
        name: "reshape, replica 0 stays",
        src_set: fx.set.clone(),
        fx,
        single_hdr: false,
        target: RESIZE_IN_PLACE,
        staged: false,
        torn_every: 4,
    }
}

const SPLIT_ONTO_OWN: Layout<'static> = &[&[("/pool/r0p0", 8), ("/pool/b", 9)]];

fn reshape_none_stays_case() -> Case<'static> {
    let fx = Fixture::new(&[&[16]], false);
    Case {
        name: "reshape, no replica stays",
        src_set: fx.set.clone(),
        fx,
        single_hdr: false,
        target: SPLIT_ONTO_OWN,
        staged: true,
        torn_every: 4,
    }
}

const DROP_A_PART: Layout<'static> = &[
    &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
    &[("/pool/r1p0", 17)],
];

/// Replica 1 is merged into its (grown) first part: its second part is
/// deleted at the end.
fn reshape_dropping_a_part_case() -> Case<'static> {
    let fx = Fixture::new(&[&[8, 8], &[8, 8]], false);
    Case {
        name: "reshape, a part dropped",
        src_set: fx.set.clone(),
        fx,
        single_hdr: false,
        target: DROP_A_PART,
        staged: false,
        torn_every: 4,
    }
}

const ONTO_NEW_FILES: Layout<'static> = &[&[("/pool/n0", 8), ("/pool/n1", 9)]];

/// Every replica replaced by one on new files: the data is read from the
/// source itself (nothing is staged), whose files are all deleted at the
/// end.
fn reshape_onto_new_files_case() -> Case<'static> {
    let fx = Fixture::new(&[&[16]], false);
    Case {
        name: "reshape onto new files",
        src_set: fx.set.clone(),
        fx,
        single_hdr: false,
        target: ONTO_NEW_FILES,
        staged: false,
        torn_every: 4,
    }
}

const REUSE_A_HEADERLESS_PART: Layout<'static> = &[&[("/pool/r0p1", 8), ("/pool/c", 9)]];

/// SINGLEHDR on both sides: the header-less second part becomes the first
/// part of the new layout, and the old part 0, which is not recreated, is
/// invalidated before anything is, then deleted at the end.
fn reshape_reusing_a_headerless_part_case() -> Case<'static> {
    let fx = Fixture::new(&[&[8, 8]], true);
    Case {
        name: "reshape reusing a header-less part",
        src_set: fx.set.clone(),
        fx,
        single_hdr: true,
        target: REUSE_A_HEADERLESS_PART,
        staged: true,
        torn_every: 4,
    }
}

#[test]
fn crash_while_reshaping_onto_a_headerless_part() {
    reshape_reusing_a_headerless_part_case().run(1, (0, 1));
}

#[test]
fn crash_while_reshaping_onto_new_files() {
    reshape_onto_new_files_case().run(1, (0, 1));
}

#[test]
fn crash_while_adding_singlehdr() {
    add_singlehdr_case().run(1, (0, 1));
}

#[test]
fn crash_while_removing_singlehdr_first_half() {
    remove_singlehdr_case().run(1, (0, 2));
}

#[test]
fn crash_while_removing_singlehdr_second_half() {
    remove_singlehdr_case().run(1, (1, 2));
}

#[test]
fn crash_while_reshaping_with_a_replica_that_stays() {
    reshape_stable_case().run(1, (0, 1));
}

#[test]
fn crash_while_reshaping_with_no_replica_staying() {
    reshape_none_stays_case().run(1, (0, 1));
}

#[test]
fn crash_while_reshaping_and_dropping_a_part() {
    reshape_dropping_a_part_case().run(1, (0, 1));
}

// --- without crashes ---

fn dry_run() -> TransformOptions {
    TransformOptions {
        dry_run: true,
        ..options()
    }
}

/// Crashes a run of `case` at event `k` and reboots after a power failure.
fn crashed_at(case: &Case<'_>, reference: &Reference, k: u64) -> SimStorage {
    let s = reference.base.after_crash_with(Survival::Everything);
    s.crash_after(k);
    let result = transform(&s, case.src(), Path::new(DST), &options(), &NoProgress);
    assert!(
        matches!(
            result,
            Err(Error::Storage(PmemError::SimulatedCrash { .. }))
        ),
        "{result:?}"
    );
    s.after_crash_with(Survival::Durable)
}

/// The first event at which a power failure leaves a source that does not
/// open healthy.
fn first_broken(case: &Case<'_>, reference: &Reference) -> (u64, SimStorage) {
    (reference.protect..reference.log.len() as u64)
        .find_map(|k| {
            let s = crashed_at(case, reference, k);
            (!healthy(&s, case.src())).then_some((k, s))
        })
        .expect("the source breaks at some point")
}

#[test]
fn no_room_for_the_temporary_copy_is_refused_before_anything_is_written() {
    let case = add_singlehdr_case();
    let s = case.fx.copy();
    put_set(&s, Path::new(DST), true, THREE_PARTS);
    let used: u64 = s
        .image()
        .files()
        .values()
        .map(|f| f.bytes.len() as u64)
        .sum();
    // Room for the journal (the plan grants it 64 KiB) and all but the
    // last page of the temporary copy: the recreated parts replace the old
    // ones and need nothing more.
    let pool = case.src_set.pool_size().expect("pool size");
    let needed = (64 << 10) + pool.div_ceil(PAGE) * PAGE;
    s.set_capacity(Some(used + needed - PAGE));
    let before = s.image();
    let err =
        transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("not enough free space for the new parts and the temporary copy"),
        "{msg}"
    );
    assert!(s.image() == before, "a refused transform wrote");
    // One more page and it fits.
    s.set_capacity(Some(used + needed));
    transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect("fits");
    assert!(healthy(&s, Path::new(DST)));
}

#[test]
fn a_dry_run_changes_nothing_and_reports_the_staging() {
    let case = add_singlehdr_case();
    let s = case.fx.copy();
    put_set(&s, Path::new(DST), true, THREE_PARTS);
    let before = s.image();
    let dry = transform(&s, case.src(), Path::new(DST), &dry_run(), &NoProgress).expect("dry run");
    assert!(s.image() == before, "the dry run wrote");
    assert!(dry.report.is_none());
    let plan = &dry.plan;
    assert_eq!(plan.operation, Operation::AddSingleHdr);
    let staging = plan.staging.as_ref().expect("staging");
    assert_eq!(staging.journal, journal_path(case.src()));
    assert_eq!(
        staging.journal,
        PathBuf::from(format!("/pool/pool.set{JOURNAL_SUFFIX}"))
    );
    let temp = staging.temporary.as_ref().expect("a temporary copy");
    assert_eq!(temp.path, PathBuf::from("/pool/.r0p0.poolsync-tmp"));
    assert_eq!(temp.size, plan.pool_size.div_ceil(PAGE) * PAGE);
    assert!(!temp.complete);
    assert_eq!(staging.data_from, DataFrom::Temporary);
    assert_eq!(staging.rewritten, vec![0]);
    assert!(!staging.resumed);
    assert_eq!(plan.totals.bytes_to_stage, plan.pool_size - PAGE);
    assert_eq!(plan.totals.parts_to_create, 3);
    assert_eq!(plan.totals.bytes_to_allocate, 3 * 8 * M + temp.size);
    assert!(plan.discard.is_empty());
    // The real run carries out the same plan.
    let done = transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect("run");
    assert_eq!(done.plan, dry.plan);

    // With a replica that stays, nothing is staged.
    let case = reshape_stable_case();
    let s = case.fx.copy();
    put_set(&s, Path::new(DST), false, RESIZE_IN_PLACE);
    let before = s.image();
    let dry = transform(&s, case.src(), Path::new(DST), &dry_run(), &NoProgress).expect("dry run");
    assert!(s.image() == before, "the dry run wrote");
    let staging = dry.plan.staging.as_ref().expect("staging");
    assert_eq!(staging.temporary, None);
    assert_eq!(staging.data_from, DataFrom::Replica { replica: 0 });
    assert_eq!(staging.rewritten, vec![1]);
    assert_eq!(dry.plan.totals.bytes_to_stage, 0);
    assert_eq!(
        dry.plan.operation,
        Operation::Reshape {
            added: vec![1],
            removed: vec![1]
        }
    );
}

#[test]
fn a_stale_journal_and_copy_beside_a_healthy_source_are_discarded() {
    let case = reshape_none_stays_case();
    let reference = case.reference();
    // Crashed once the copy was complete, before the source changed
    // durably: the journal and a complete copy are left.
    let s = crashed_at(&case, &reference, reference.protect + 1);
    let journal = journal_path(case.src());
    let temp = temp_of(&case.src_set);
    assert!(healthy(&s, case.src()), "the source is healthy");
    assert!(exists(&s, &journal) && exists(&s, &temp));
    let done = transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect("run");
    assert_eq!(done.plan.discard, vec![temp.clone(), journal.clone()]);
    let staging = done.plan.staging.as_ref().expect("staging");
    assert!(!staging.resumed);
    assert!(
        staging.temporary.as_ref().is_some_and(|t| !t.complete),
        "the copy is made again"
    );
    case.check_end(&s, &reference, "after a stale journal");

    // A journal torn while it was written is stale too.
    let s = crashed_at(&case, &reference, 0);
    let text = reference_journal(&case, &reference);
    let mut torn = vec![0u8; text.len()];
    torn[..512].copy_from_slice(&text[..512]);
    s.insert_file(&journal, &torn, 0o600).expect("torn journal");
    let done = transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect("run");
    assert_eq!(done.plan.discard, vec![journal.clone()]);
    case.check_end(&s, &reference, "after a torn journal");
}

/// The journal an uninterrupted run writes.
fn reference_journal(case: &Case<'_>, reference: &Reference) -> Vec<u8> {
    let s = crashed_at(case, reference, reference.protect);
    s.written_bytes(&journal_path(case.src())).expect("journal")
}

#[test]
fn a_journal_of_other_set_files_is_refused_naming_it() {
    let case = add_singlehdr_case();
    let reference = case.reference();
    let (k, s) = first_broken(&case, &reference);
    let journal = journal_path(case.src());
    let text = String::from_utf8(s.written_bytes(&journal).expect("journal")).expect("text");
    let changed: String = text
        .lines()
        .map(|line| match line.strip_prefix("target_crc = ") {
            Some(crc) => format!("target_crc = {}\n", crc.parse::<u64>().expect("crc") ^ 1),
            None => format!("{line}\n"),
        })
        .collect();
    assert_ne!(changed, text);
    s.remove(&journal).expect("rm");
    s.insert_file(&journal, changed.as_bytes(), 0o600)
        .expect("journal");
    let before = s.image();
    let err =
        transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect_err("refused");
    assert!(s.image() == before, "a refusal wrote");
    let msg = err.to_string();
    assert!(
        msg.contains(&journal.display().to_string()) && msg.contains("changed since it began"),
        "crash at {k}: {msg}"
    );
    // Put back, the journal lets the transform finish.
    s.remove(&journal).expect("rm");
    s.insert_file(&journal, text.as_bytes(), 0o600)
        .expect("journal");
    let done = finish(&s, case.src(), Path::new(DST), "put back");
    assert!(done.plan.staging.as_ref().is_some_and(|st| st.resumed));
    case.check_end(&s, &reference, "put back");

    // A journal that does not parse beside a broken source is an error
    // that names it.
    let (_, s) = first_broken(&case, &reference);
    s.remove(&journal).expect("rm");
    s.insert_file(&journal, b"version = \"one\"\n", 0o600)
        .expect("journal");
    let err =
        transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect_err("refused");
    assert!(
        matches!(err, Error::Journal { ref path, .. } if *path == journal),
        "{err}"
    );
}

#[test]
fn a_foreign_file_where_the_copy_goes_is_refused_and_left_alone() {
    let case = add_singlehdr_case();
    let other = Fixture::new(&[&[8]], false);
    let foreign = other.base.written_bytes(other.part(0, 0)).expect("part");
    let other_uuid = poolsync_header::PoolHdr::decode(&foreign)
        .expect("header")
        .poolset_uuid
        .to_canonical();
    let temp = temp_of(&case.src_set);
    for (bytes, what) in [
        (foreign, format!("carries pool set uuid {other_uuid}")),
        (
            vec![0x5a; 64 << 10],
            "carries no obj pool header".to_string(),
        ),
    ] {
        let s = case.fx.copy();
        put_set(&s, Path::new(DST), true, THREE_PARTS);
        s.insert_file(&temp, &bytes, 0o644).expect("foreign file");
        let before = s.image();
        for opts in [dry_run(), options()] {
            let err =
                transform(&s, case.src(), Path::new(DST), &opts, &NoProgress).expect_err("refused");
            assert!(s.image() == before, "a refusal wrote");
            let msg = err.to_string();
            assert!(
                msg.contains(&temp.display().to_string()) && msg.contains(&what),
                "{msg}"
            );
        }
    }
}

#[test]
fn another_transform_is_refused_until_the_interrupted_one_finishes() {
    let case = add_singlehdr_case();
    let reference = case.reference();
    let (_, s) = first_broken(&case, &reference);
    let command = format!("`poolsync transform {} {DST}`", case.src().display());
    // A staged transform and a plain one (adding a replica).
    let others: [(bool, Layout<'_>); 2] = [
        (false, &[&[("/pool/r0p0", 12), ("/pool/r0p1", 12)]]),
        (
            false,
            &[
                &[("/pool/r0p0", 8), ("/pool/r0p1", 8), ("/pool/r0p2", 8)],
                &[("/pool/x", 24)],
            ],
        ),
    ];
    for (single_hdr, layout) in others {
        put_set(&s, Path::new(OTHER), single_hdr, layout);
        let before = s.image();
        let err = transform(&s, case.src(), Path::new(OTHER), &options(), &NoProgress)
            .expect_err("refused");
        assert!(s.image() == before, "a refusal wrote");
        let msg = err.to_string();
        assert!(msg.contains(&command), "{msg}");
        assert!(
            msg.contains(&journal_path(case.src()).display().to_string()),
            "{msg}"
        );
    }
    s.remove(Path::new(OTHER)).expect("rm");
    follow(&s, &named_command(&command).expect("a command"));
    case.check_end(&s, &reference, "as told");
}

/// The flaky interop test's case: killed between creating the temporary
/// copy and allocating it, the run leaves an empty file of mode 0 beside a
/// healthy source. The journal names it, so the re-run deletes it and the
/// journal first, and finishes alone.
#[test]
fn an_empty_temporary_copy_left_by_a_kill_is_recognised() {
    let case = add_singlehdr_case();
    let reference = case.reference();
    let temp = temp_of(&case.src_set);
    let k = reference
        .log
        .iter()
        .position(|e| *e == Ev::Allocate { path: temp.clone() })
        .expect("the temporary copy is allocated") as u64;
    let s = reference.base.after_crash_with(Survival::Everything);
    s.crash_after(k);
    transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect_err("crash");
    let s = s.after_crash_with(Survival::Everything);
    let meta = s.stat(&temp).expect("stat").expect("the copy is left");
    assert_eq!((meta.len, meta.mode), (0, 0));
    assert!(healthy(&s, case.src()));
    let journal = journal_path(case.src());
    let done = finish(&s, case.src(), Path::new(DST), "after the kill");
    assert_eq!(done.plan.discard, vec![temp, journal]);
    case.check_end(&s, &reference, "after the kill");
}
