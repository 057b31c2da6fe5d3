//! The crash-point harness of every writer (ARCHITECTURE.md, "Crash model",
//! rule 3): run a writer once on the simulated storage, then stop a fresh
//! copy at each chosen persistence event, reboot it, and check what must
//! hold right after the crash, that a re-run finishes, and where it ends.
//!
//! ```text
//! let test = CrashTest::new("sync", base, |s| sync(s, set, &opts, &NoProgress));
//! let reference = test.reference();          // uninterrupted; check it as you like
//! test.sweep(&reference, reference.all_points())
//!     .survivals(|k| ...)                    // default: Durable, Everything
//!     .after_crash(|c| ...)                  // the invariant right after the reboot
//!     .rerun(|c| ...)                        // default: the writer again, which must succeed
//!     .end_image(normalized)                 // default: the raw image equals the reference's
//!     .end(|c, outcome| ...)                 // further checks of the end state
//!     .run();
//! ```
//!
//! Crash point `k` below the reference's event count `n` stops the run at
//! event `k`, which must fail with that simulated crash; point `n` lets the
//! run complete and then cuts the power, which checks that a writer has
//! made its work durable before it returns. Every writer runs on a
//! [`Wrapped`] storage, so its operations are logged (the reference's
//! events can be found by name) and a fault other than a crash can be
//! injected in [`CrashTest::interrupt`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use poolsync_engine::Error;
use poolsync_pmem::sim::{SimImage, SimStorage, Survival};
use poolsync_pmem::Error as PmemError;

use crate::support::{image_diff, Op, Wrapped};

/// The writer of a [`CrashTest`]: one run of a command on a storage.
type Writer<'a, T> = Box<dyn Fn(&Wrapped) -> Result<T, Error> + Send + Sync + 'a>;

/// A writer and the quiescent storage every run of it starts from.
pub struct CrashTest<'a, T> {
    name: String,
    base: SimStorage,
    writer: Writer<'a, T>,
    /// Whether every run makes the same events in the same order.
    ordered: bool,
}

/// What an uninterrupted run did and left.
#[derive(Debug)]
pub struct Reference<T> {
    /// The storage after the run.
    pub storage: SimStorage,
    /// What the writer returned.
    pub outcome: T,
    /// Its persistence events: event `k` is `events[k]`.
    pub events: Vec<Op>,
}

impl<T> Reference<T> {
    /// The number of persistence events, `n`.
    pub fn n(&self) -> u64 {
        self.events.len() as u64
    }

    /// Every crash point: each event, and the completed run (`n`).
    pub fn all_points(&self) -> Vec<u64> {
        (0..=self.n()).collect()
    }

    /// The first event at or after `from` that satisfies `pred`.
    pub fn find(&self, from: u64, pred: impl Fn(&Op) -> bool) -> Option<u64> {
        (from..self.n()).find(|&k| pred(&self.events[k as usize]))
    }
}

impl<'a, T> CrashTest<'a, T> {
    /// A crash test of `writer` on copies of `base`.
    pub fn new(
        name: impl Into<String>,
        base: SimStorage,
        writer: impl Fn(&Wrapped) -> Result<T, Error> + Send + Sync + 'a,
    ) -> Self {
        CrashTest {
            name: name.into(),
            base,
            writer: Box::new(writer),
            ordered: true,
        }
    }

    /// The writer's events may come in another order on each run: a batch
    /// that mixes copies and compares interleaves the workers' writes with
    /// the write-behind thread's (crates/engine/src/exec/write_behind.rs).
    /// Crash point `k` is then the `k`-th event of that run, which the
    /// reference's `events[k]` names only approximately. Without this,
    /// [`CrashTest::interrupt`] checks that a stopped run made exactly the
    /// reference's first `k` events.
    pub fn events_interleave(mut self) -> Self {
        self.ordered = false;
        self
    }

    /// The storage every run starts from a copy of.
    pub fn base(&self) -> &SimStorage {
        &self.base
    }

    /// An independent copy of the base.
    pub fn copy(&self) -> SimStorage {
        self.base.after_crash_with(Survival::Everything)
    }

    /// Runs the writer on `s`.
    pub fn run_on(&self, s: &SimStorage) -> Result<T, Error> {
        (self.writer)(&Wrapped::new(s.clone()))
    }

    /// Runs the writer uninterrupted on a copy of the base; it must succeed.
    pub fn reference(&self) -> Reference<T> {
        let storage = Wrapped::new(self.copy());
        let outcome = (self.writer)(&storage)
            .unwrap_or_else(|e| panic!("{}: uninterrupted run: {e}", self.name));
        let events = storage.events();
        assert_eq!(
            events.len() as u64,
            storage.sim().events(),
            "{}: every event logged",
            self.name
        );
        Reference {
            storage: storage.sim().clone(),
            outcome,
            events,
        }
    }

    /// Runs the writer on a copy of the base and stops it at crash point
    /// `k` of `reference` (see the module documentation); returns the
    /// storage as the stopped run left it, to be rebooted.
    pub fn interrupt(&self, reference: &Reference<T>, k: u64) -> SimStorage {
        let name = &self.name;
        let s = Wrapped::new(self.copy());
        s.sim().crash_after(k);
        let result = (self.writer)(&s);
        let at = event_name(reference, k);
        match result {
            Ok(_) if k == reference.n() => {}
            Ok(_) => panic!("{name}: crash at {at}: the run completed"),
            Err(e) if k < reference.n() && crash_event(&e) == Some(k) => {}
            Err(e) => panic!("{name}: crash at {at}: expected that simulated crash, got {e:?}"),
        }
        // The stopped run made the reference's first `k` events, so
        // `reference.events[k]` names the one it stopped at.
        if self.ordered {
            let made = s.events();
            let first_difference = made.iter().zip(&reference.events).position(|(a, b)| a != b);
            assert!(
                made[..] == reference.events[..k as usize],
                "{name}: crash at {at}: another path than the reference's (from event {first_difference:?} on)"
            );
        }
        s.sim().clone()
    }

    /// Crash points of `reference` to check, with every check at its default.
    pub fn sweep<'s>(
        &'s self,
        reference: &'s Reference<T>,
        points: impl IntoIterator<Item = u64>,
    ) -> Sweep<'s, 'a, T> {
        Sweep {
            test: self,
            reference,
            points: points.into_iter().collect(),
            survivals: Box::new(|_| vec![Survival::Durable, Survival::Everything]),
            after_crash: Box::new(|_| {}),
            rerun: Box::new(|c| {
                c.run()
                    .unwrap_or_else(|e| panic!("{} {c}: re-run failed: {e}", c.name()))
            }),
            end_image: Some(Box::new(SimStorage::image)),
            end: Box::new(|_, _| {}),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            skip_seen: 0,
        }
    }
}

fn event_name<T>(reference: &Reference<T>, k: u64) -> String {
    match reference.events.get(k as usize) {
        Some(op) => format!("event {k} ({op})"),
        None => format!("event {k} (after the run)"),
    }
}

/// The event of the simulated crash that `e` reports, if it reports one.
pub fn crash_event(e: &Error) -> Option<u64> {
    match e {
        Error::Storage(PmemError::SimulatedCrash { event }) => return Some(*event),
        Error::Leftovers { error, .. } | Error::Unfinished { error, .. } => {
            return crash_event(error)
        }
        Error::PartStorage {
            error: PmemError::SimulatedCrash { event },
            ..
        } => return Some(*event),
        _ => {}
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(PmemError::SimulatedCrash { event }) = c.downcast_ref::<PmemError>() {
            return Some(*event);
        }
        if let Some(k) = c.downcast_ref::<Error>().and_then(crash_event) {
            return Some(k);
        }
        cause = c.source();
    }
    None
}

/// A storage rebooted after a crash at one crash point, as the checks of a
/// [`Sweep`] see it. Its `Display` names the point and the survival, for
/// assertion messages.
pub struct Rebooted<'s, T> {
    /// The crash point.
    pub k: u64,
    /// The event the run stopped at; `None` for the completed run.
    pub event: Option<&'s Op>,
    /// What survived.
    pub survival: Survival,
    /// The rebooted storage.
    pub storage: SimStorage,
    test: &'s CrashTest<'s, T>,
    notes: &'s Mutex<BTreeMap<String, u64>>,
}

impl<T> Rebooted<'_, T> {
    /// Runs the writer again on the rebooted storage.
    pub fn run(&self) -> Result<T, Error> {
        self.test.run_on(&self.storage)
    }

    /// The test's name.
    pub fn name(&self) -> &str {
        &self.test.name
    }

    /// Counts an observation for the sweep's summary.
    pub fn note(&self, what: impl Into<String>) {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        *notes.entry(what.into()).or_default() += 1;
    }
}

impl<T> fmt::Display for Rebooted<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // With interleaving events the reference's event is only a hint.
        let about = if self.test.ordered { "" } else { "about " };
        match self.event {
            Some(op) => write!(f, "event {} ({about}{op}) {:?}", self.k, self.survival),
            None => write!(f, "event {} (after the run) {:?}", self.k, self.survival),
        }
    }
}

/// The closures of a [`Sweep`].
type Check<'s, T> = Box<dyn Fn(&Rebooted<'_, T>) + Sync + 's>;
type Rerun<'s, T> = Box<dyn Fn(&Rebooted<'_, T>) -> T + Sync + 's>;
type Normalize<'s> = Box<dyn Fn(&SimStorage) -> SimImage + Sync + 's>;
type EndCheck<'s, T> = Box<dyn Fn(&Rebooted<'_, T>, &T) + Sync + 's>;

/// The crash points of one [`CrashTest`] and what to check at each; see
/// the module documentation.
pub struct Sweep<'s, 'a, T> {
    test: &'s CrashTest<'a, T>,
    reference: &'s Reference<T>,
    points: Vec<u64>,
    survivals: Box<dyn Fn(u64) -> Vec<Survival> + Sync + 's>,
    after_crash: Check<'s, T>,
    rerun: Rerun<'s, T>,
    end_image: Option<Normalize<'s>>,
    end: EndCheck<'s, T>,
    threads: usize,
    skip_seen: usize,
}

impl<'s, 'a: 's, T: Sync> Sweep<'s, 'a, T> {
    /// What may survive a crash at point `k`: one reboot (and re-run) each.
    pub fn survivals(mut self, f: impl Fn(u64) -> Vec<Survival> + Sync + 's) -> Self {
        self.survivals = Box::new(f);
        self
    }

    /// What must hold right after the reboot, before anything runs again.
    pub fn after_crash(mut self, f: impl Fn(&Rebooted<'_, T>) + Sync + 's) -> Self {
        self.after_crash = Box::new(f);
        self
    }

    /// How to finish the job after the reboot (for example following the
    /// instructions of a refusal); returns the final outcome.
    pub fn rerun(mut self, f: impl Fn(&Rebooted<'_, T>) -> T + Sync + 's) -> Self {
        self.rerun = Box::new(f);
        self
    }

    /// After the re-run, `f` of the storage must equal `f` of the
    /// reference's (`f` normalises what legitimately differs, such as
    /// creation times).
    pub fn end_image(mut self, f: impl Fn(&SimStorage) -> SimImage + Sync + 's) -> Self {
        self.end_image = Some(Box::new(f));
        self
    }

    /// No comparison with the reference's end state (when the end state
    /// cannot be equal, or [`Sweep::end`] compares it).
    pub fn without_end_image(mut self) -> Self {
        self.end_image = None;
        self
    }

    /// Further checks of the end state, given the re-run's outcome.
    pub fn end(mut self, f: impl Fn(&Rebooted<'_, T>, &T) + Sync + 's) -> Self {
        self.end = Box::new(f);
        self
    }

    /// Runs the crash points on `n` threads, each a contiguous share.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Skips the checks of a reboot whose files equal one of the last `n`
    /// a thread checked: the runs are deterministic, so the outcome would
    /// be the same. The invariant after the crash must then not depend on
    /// the crash point beyond what the earlier point checked.
    pub fn skip_seen(mut self, n: usize) -> Self {
        self.skip_seen = n;
        self
    }

    /// Checks every crash point; panics with the point and survival at the
    /// first failure, and prints a summary.
    pub fn run(self) {
        let expected = self.end_image.as_ref().map(|f| f(&self.reference.storage));
        let notes = Mutex::new(BTreeMap::new());
        let shares = self.threads.min(self.points.len()).max(1);
        let len = self.points.len();
        let counts: Vec<(u64, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..shares)
                .map(|i| {
                    let points = &self.points[len * i / shares..len * (i + 1) / shares];
                    let (this, expected, notes) = (&self, expected.as_ref(), &notes);
                    scope.spawn(move || this.share(points, expected, notes))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let (checked, skipped) = counts.iter().fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        eprintln!(
            "{}: {} events, {} crash points, {checked} reboots checked ({skipped} skipped as seen); {:#?}",
            self.test.name,
            self.reference.n(),
            len,
            notes.into_inner().unwrap_or_else(|e| e.into_inner())
        );
    }

    /// Checks `points` in order; returns the reboots checked and skipped.
    fn share(
        &self,
        points: &[u64],
        expected: Option<&SimImage>,
        notes: &Mutex<BTreeMap<String, u64>>,
    ) -> (u64, u64) {
        let (mut checked, mut skipped) = (0, 0);
        let mut seen: Vec<SimImage> = Vec::new();
        for &k in points {
            let crashed = self.test.interrupt(self.reference, k);
            for survival in (self.survivals)(k) {
                let c = Rebooted {
                    k,
                    event: self.reference.events.get(k as usize),
                    survival,
                    storage: crashed.after_crash_with(survival),
                    test: self.test,
                    notes,
                };
                if self.skip_seen > 0 {
                    let image = c.storage.image();
                    if seen.contains(&image) {
                        skipped += 1;
                        continue;
                    }
                    if seen.len() == self.skip_seen {
                        seen.remove(0);
                    }
                    seen.push(image);
                }
                checked += 1;
                self.check(&c, expected);
            }
        }
        (checked, skipped)
    }

    fn check(&self, c: &Rebooted<'_, T>, expected: Option<&SimImage>) {
        (self.after_crash)(c);
        let outcome = (self.rerun)(c);
        if let (Some(f), Some(expected)) = (&self.end_image, expected) {
            let now = f(&c.storage);
            assert!(
                now == *expected,
                "{} {c}: the re-run ended elsewhere: {}",
                c.name(),
                image_diff(&now, expected)
            );
        }
        (self.end)(c, &outcome);
    }
}

/// The usual survivals: a power failure and a killed process at every
/// point, and torn mixes (seeds `k` and `k ^ 0x5eed`, as many as `torn`
/// says) at every `every`-th point (none when `every` is 0).
pub fn survivals_torn_every(k: u64, every: u64, torn: usize) -> Vec<Survival> {
    let mut out = vec![Survival::Durable, Survival::Everything];
    if every > 0 && k.is_multiple_of(every) {
        out.extend(
            [k, k ^ 0x5eed]
                .into_iter()
                .take(torn)
                .map(|seed| Survival::Torn { seed }),
        );
    }
    out
}
