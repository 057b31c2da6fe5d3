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
//! events can be found by name).
//!
//! The same checks serve faults that do not stop the machine
//! ([`CrashTest::fault_sweep`]): for each [`Fault`] of the simulated
//! storage (EIO on a read, a write or an fsync, ENOSPC, EROFS), a run is
//! failed at the `k`-th call the fault applies to, for `k` in `0..n` of
//! the reference's calls (a spread sample of [`FAULT_POINTS`] of them, or
//! every one with `POOLSYNC_FAULT_POINTS=all`). The run must not panic; it
//! must succeed durably (a fault it can work around: it ends where the
//! reference ends, or, when the fault changed a decision, such as a header
//! it could not read rebuilt with new UUIDs, where the writer's own checks
//! accept) or fail with a clear message: one line, as the CLI prints the
//! error's chain, that names a file whose call failed and quotes the
//! system's text once per failure. Then the fault is cleared, and the
//! storage as the failed run left it (the process ended, the machine runs
//! on) and after a power failure goes through the sweep's checks as a
//! crashed one does: the invariant right after, the re-run, the end state.
//!
//! ```text
//! test.fault_sweep(&reference, Fault::ALL)   // then the same builder as above
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Instant;

use poolsync_engine::Error;
use poolsync_pmem::sim::{Fault, FaultHit, SimImage, SimStorage, Survival};
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
    /// Per fault, the calls it applies to that the run made.
    pub fault_ops: BTreeMap<Fault, u64>,
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
        let fault_ops = Fault::ALL
            .iter()
            .map(|&f| (f, storage.sim().fault_ops(f)))
            .collect();
        Reference {
            storage: storage.sim().clone(),
            outcome,
            events,
            fault_ops,
        }
    }

    /// Runs the writer on a copy of the base with `fault` injected at its
    /// `k`-th call, checks that the run did not panic and that a failure
    /// says what failed (see the module documentation), and clears the
    /// fault. Returns the storage as the run left it, and the run's
    /// failure as one line, if it failed.
    pub fn inject(&self, fault: Fault, k: u64) -> (SimStorage, Option<String>) {
        let name = &self.name;
        let s = Wrapped::new(self.copy());
        s.sim().inject(fault, k);
        let result = catch_unwind(AssertUnwindSafe(|| (self.writer)(&s))).unwrap_or_else(|p| {
            let text = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|t| t.to_string()))
                .unwrap_or_default();
            panic!("{name}: {fault} at call {k}: the writer panicked: {text}")
        });
        s.sim().clear_fault();
        let hits = s.sim().fault_hits();
        match (&result, hits.first()) {
            (Ok(_), _) => {}
            (Err(e), None) => panic!("{name}: {fault} at call {k}: failed, but not by it: {e}"),
            (Err(e), Some(hit)) => {
                if let Err(why) = clear_message(e, &hits) {
                    panic!(
                        "{name}: {fault} at call {k} ({} {}): the message {why}: {}",
                        hit.op,
                        hit.path.display(),
                        one_line(e)
                    );
                }
            }
        }
        (s.sim().clone(), result.err().map(|e| one_line(&e)))
    }

    /// A sweep of `faults`, each injected at calls of the reference's run
    /// (see the module documentation), with every check at its default;
    /// the survivals default to the machine running on and a power failure.
    pub fn fault_sweep<'s>(
        &'s self,
        reference: &'s Reference<T>,
        faults: impl IntoIterator<Item = Fault>,
    ) -> Sweep<'s, 'a, T> {
        let max = fault_points();
        let mut sweep = self.sweep(reference, []);
        sweep.faults = faults
            .into_iter()
            .flat_map(|f| {
                let n = reference.fault_ops.get(&f).copied().unwrap_or(0);
                spread(n, max).into_iter().map(move |k| (f, k))
            })
            .collect();
        sweep
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
            faults: Vec::new(),
            fault_survivals: Box::new(|_| vec![Survival::Everything, Survival::Durable]),
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
    /// In a fault sweep, the fault injected at call `k` (and the run
    /// stopped by no crash).
    pub fault: Option<Fault>,
    /// In a fault sweep, the run worked around the fault and ended in
    /// another state than the reference's, so the end state is not
    /// compared with the reference's (the sweep's other checks hold).
    pub elsewhere: bool,
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
        if let Some(fault) = self.fault {
            return write!(f, "{fault} at call {} {:?}", self.k, self.survival);
        }
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
    /// A fault sweep's points: each fault with the call it fails.
    faults: Vec<(Fault, u64)>,
    fault_survivals: Box<dyn Fn(u64) -> Vec<Survival> + Sync + 's>,
}

impl<'s, 'a: 's, T: Sync> Sweep<'s, 'a, T> {
    /// What may survive a crash at point `k`: one reboot (and re-run) each.
    pub fn survivals(mut self, f: impl Fn(u64) -> Vec<Survival> + Sync + 's) -> Self {
        self.survivals = Box::new(f);
        self
    }

    /// In a fault sweep, what may survive the failed run at call `k`
    /// (default: everything, as the machine runs on, and what was
    /// durable, as after a power failure right after the run).
    pub fn fault_survivals(mut self, f: impl Fn(u64) -> Vec<Survival> + Sync + 's) -> Self {
        self.fault_survivals = Box::new(f);
        self
    }

    /// In a fault sweep, fails `max` calls of each fault instead of
    /// [`FAULT_POINTS`] (for a slow writer), unless
    /// `POOLSYNC_FAULT_POINTS` says otherwise.
    pub fn fault_points(mut self, max: usize) -> Self {
        if std::env::var_os("POOLSYNC_FAULT_POINTS").is_none() && !self.faults.is_empty() {
            let mut faults: Vec<Fault> = self.faults.iter().map(|&(f, _)| f).collect();
            faults.dedup();
            let reference = self.reference;
            self.faults = faults
                .into_iter()
                .flat_map(|f| {
                    let n = reference.fault_ops.get(&f).copied().unwrap_or(0);
                    spread(n, Some(max)).into_iter().map(move |k| (f, k))
                })
                .collect();
        }
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

    /// Checks every crash point (or, in a fault sweep, every fault at each
    /// of its calls); panics with the point and survival at the first
    /// failure, and prints a summary.
    pub fn run(self) {
        let started = Instant::now();
        let expected = self.end_image.as_ref().map(|f| f(&self.reference.storage));
        let notes = Mutex::new(BTreeMap::new());
        let messages = Mutex::new(BTreeMap::new());
        let points: Vec<(Option<Fault>, u64)> = if self.faults.is_empty() {
            self.points.iter().map(|&k| (None, k)).collect()
        } else {
            self.faults.iter().map(|&(f, k)| (Some(f), k)).collect()
        };
        let shares = self.threads.min(points.len()).max(1);
        let len = points.len();
        let counts: Vec<(u64, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..shares)
                .map(|i| {
                    let points = &points[len * i / shares..len * (i + 1) / shares];
                    let (this, expected) = (&self, expected.as_ref());
                    let (notes, messages) = (&notes, &messages);
                    scope.spawn(move || this.share(points, expected, notes, messages))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let (checked, skipped) = counts.iter().fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        let notes = notes.into_inner().unwrap_or_else(|e| e.into_inner());
        let name = &self.test.name;
        if self.faults.is_empty() {
            eprintln!(
                "{name}: {} events, {len} crash points, {checked} reboots checked ({skipped} skipped as seen); {notes:#?}",
                self.reference.n(),
            );
        } else {
            let calls: Vec<String> = Fault::ALL
                .iter()
                .map(|f| {
                    let n = self.reference.fault_ops.get(f).copied().unwrap_or(0);
                    let at = self.faults.iter().filter(|(g, _)| g == f).count();
                    format!("{f}: {at} of {n} calls")
                })
                .collect();
            eprintln!(
                "{name} faults: {}; {checked} reboots checked ({skipped} skipped as seen) in {:.1} s; {notes:#?}",
                calls.join(", "),
                started.elapsed().as_secs_f64()
            );
            for (fault, text) in messages.into_inner().unwrap_or_else(|e| e.into_inner()) {
                eprintln!("  {fault}, first failure: {text}");
            }
        }
    }

    /// Checks `points` in order; returns the reboots checked and skipped.
    fn share(
        &self,
        points: &[(Option<Fault>, u64)],
        expected: Option<&SimImage>,
        notes: &Mutex<BTreeMap<String, u64>>,
        messages: &Mutex<BTreeMap<Fault, String>>,
    ) -> (u64, u64) {
        let (mut checked, mut skipped) = (0, 0);
        let mut seen: Vec<SimImage> = Vec::new();
        for &(fault, k) in points {
            let mut elsewhere = false;
            let left = match fault {
                None => self.test.interrupt(self.reference, k),
                Some(fault) => {
                    let (left, failure) = self.test.inject(fault, k);
                    let ok = failure.is_none();
                    let outcome = if ok { "succeeded" } else { "failed" };
                    if let Some(text) = failure {
                        let mut first = messages.lock().unwrap_or_else(|e| e.into_inner());
                        first.entry(fault).or_insert(text);
                    }
                    let note = |what: String| {
                        let mut notes = notes.lock().unwrap_or_else(|e| e.into_inner());
                        *notes.entry(what).or_default() += 1;
                    };
                    note(format!("{fault}: {outcome}"));
                    if let (true, Some(f), Some(expected)) = (ok, &self.end_image, expected) {
                        // Worked around: what the run did is durable, and
                        // it ended where an undisturbed run ends, or (say,
                        // a header it could not read rebuilt with fresh
                        // UUIDs) somewhere the re-run and the sweep's end
                        // checks accept.
                        let now = f(&left.after_crash_with(Survival::Everything));
                        let durable = f(&left.after_crash_with(Survival::Durable));
                        assert!(
                            durable == now,
                            "{} {fault} at call {k}: the run succeeded, but not durably: {}",
                            self.test.name,
                            image_diff(&durable, &now)
                        );
                        elsewhere = now != *expected;
                        if elsewhere {
                            note(format!("{fault}: succeeded, ended elsewhere"));
                        }
                    }
                    left
                }
            };
            let survivals = match fault {
                None => (self.survivals)(k),
                Some(_) => (self.fault_survivals)(k),
            };
            for survival in survivals {
                let c = Rebooted {
                    k,
                    event: fault
                        .is_none()
                        .then(|| self.reference.events.get(k as usize))
                        .flatten(),
                    survival,
                    storage: left.after_crash_with(survival),
                    fault,
                    elsewhere,
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
        if let (Some(f), Some(expected), false) = (&self.end_image, expected, c.elsewhere) {
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

/// How many calls of each fault a fault sweep fails by default: a spread
/// sample, so that every writer's matrix runs in seconds in a debug build.
/// `POOLSYNC_FAULT_POINTS` sets another number, or `all` for every call.
pub const FAULT_POINTS: usize = 2;

/// The number of calls to fail per fault: `None` for all of them.
fn fault_points() -> Option<usize> {
    match std::env::var("POOLSYNC_FAULT_POINTS") {
        Ok(v) if v == "all" => None,
        Ok(v) => Some(v.parse().expect("POOLSYNC_FAULT_POINTS: a number or `all`")),
        Err(_) => Some(FAULT_POINTS),
    }
}

/// `max` (or all, for `None`) indices of `0..n`: the middles of `max`
/// equal stretches, so that a small sample lands inside the run rather
/// than on its first call (which reads the pool set file) and its last.
fn spread(n: u64, max: Option<usize>) -> Vec<u64> {
    match max {
        Some(max) if (max as u64) < n => {
            let max = max as u64;
            let mut out: Vec<u64> = (0..max).map(|i| (2 * i + 1) * n / (2 * max)).collect();
            out.dedup();
            out
        }
        _ => (0..n).collect(),
    }
}

/// `e` as the CLI prints it (crates/cli/src/output.rs, `error_text`): the
/// messages of its chain joined by `: `, leaving out a cause whose text is
/// already there.
pub fn one_line(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let message = c.to_string();
        let bare = match message.rfind(" (os error ") {
            Some(i) if message.ends_with(')') => &message[..i],
            _ => &message[..],
        };
        if !text.contains(bare) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = c.source();
    }
    text
}

/// Whether the failure `e` of a run whose calls `hits` failed says so
/// clearly: in one line, a file whose call failed (of a sticky fault, any)
/// and the system's text, once per failure it lists; or, when a later
/// fence of the file that failed is what the run reports, that an earlier
/// fdatasync failed.
fn clear_message(e: &Error, hits: &[FaultHit]) -> Result<(), String> {
    let text = one_line(e);
    let Some(hit) = hits.first() else {
        return Err("is not about the fault".into());
    };
    let os = std::io::Error::from_raw_os_error(hit.fault.errno()).to_string();
    let os = os
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_string();
    let named = |h: &FaultHit| text.contains(&h.path.display().to_string());
    if !hits.iter().any(named) {
        return Err(format!("does not name {}", hit.path.display()));
    }
    if text.contains("(os error") {
        return Err("carries Rust's `(os error N)`".into());
    }
    let poisoned = text.contains("an earlier fdatasync of this file failed");
    // A message may list several failures (one per part, `; ` between
    // them), each with its own text; none may say it twice.
    if let Some(clause) = text.split("; ").find(|c| c.matches(&os).count() > 1) {
        return Err(format!("says `{os}` twice in `{clause}`"));
    }
    match text.matches(&os).count() {
        0 if !poisoned => Err(format!("does not say `{os}`")),
        _ => Ok(()),
    }
}

/// Which of its sweeps a writer's test runs: its crash points, or every
/// fault at calls of its run. The checks are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweeping {
    /// Every crash point ([`Reference::all_points`]).
    Crashes,
    /// Every fault ([`CrashTest::fault_sweep`] of [`Fault::ALL`]).
    Faults,
}

impl Sweeping {
    /// The sweep of `test` this names, every check at its default.
    pub fn sweep<'s, 'a, T>(
        self,
        test: &'s CrashTest<'a, T>,
        reference: &'s Reference<T>,
    ) -> Sweep<'s, 'a, T> {
        match self {
            Sweeping::Crashes => test.sweep(reference, reference.all_points()),
            Sweeping::Faults => test.fault_sweep(reference, Fault::ALL),
        }
    }
}
