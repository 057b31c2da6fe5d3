//! Time as the engine sees it: a seam, so that tests can drive the clock.
//!
//! The engine never reads the real clock itself. It asks the [`Storage`]
//! it was given for a [`Clock`] ([`Storage::clock`]): [`SystemClock`] for
//! the real backends, and a logical clock for the simulated one, whose
//! sleeps return at once and advance its time. So a wait (`--wait-lock`)
//! or a time stamp (an undo file's name, an export's time) behaves the
//! same way in a crash-point test as on a real machine, only without the
//! waiting.
//!
//! [`Storage`]: crate::Storage
//! [`Storage::clock`]: crate::Storage::clock

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Monotonic time since an arbitrary origin: for measuring durations
    /// and deadlines, never for dates.
    fn elapsed(&self) -> Duration;
    /// Wall-clock time in whole seconds since the Unix epoch (0 when the
    /// system clock is set before it).
    fn unix_seconds(&self) -> u64;
    /// Waits for `duration` (or, on a logical clock, advances by it).
    fn sleep(&self, duration: Duration);
}

/// The real clock: `Instant`, `SystemTime` and `thread::sleep`.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose [`Clock::elapsed`] counts from now.
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    fn unix_seconds(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// The one real clock of the process, shared by every real backend.
pub(crate) fn system_clock() -> &'static SystemClock {
    static CLOCK: std::sync::OnceLock<SystemClock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(SystemClock::new)
}

/// A logical clock for tests: it starts at a fixed date, stands still
/// unless told otherwise, and [`Clock::sleep`] advances it instead of
/// waiting. Clones share one time.
#[derive(Debug, Clone)]
pub struct LogicalClock {
    state: Arc<Mutex<LogicalTime>>,
}

#[derive(Debug)]
struct LogicalTime {
    elapsed: Duration,
    start_unix: u64,
    /// Added to the time at every reading, so that durations measured on
    /// the clock are not all zero (0 by default: the clock stands still).
    tick: Duration,
}

/// The date a [`LogicalClock`] starts at: 2026-01-01T00:00:00Z.
pub const LOGICAL_CLOCK_START: u64 = 1_767_225_600;

impl LogicalClock {
    /// A clock standing at [`LOGICAL_CLOCK_START`].
    pub fn new() -> Self {
        LogicalClock {
            state: Arc::new(Mutex::new(LogicalTime {
                elapsed: Duration::ZERO,
                start_unix: LOGICAL_CLOCK_START,
                tick: Duration::ZERO,
            })),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut LogicalTime) -> T) -> T {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut st)
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.with(|t| t.elapsed = t.elapsed.saturating_add(by));
    }

    /// Makes every reading advance the clock by `tick` first.
    pub fn set_tick(&self, tick: Duration) {
        self.with(|t| t.tick = tick);
    }
}

impl Default for LogicalClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for LogicalClock {
    fn elapsed(&self) -> Duration {
        self.with(|t| {
            t.elapsed = t.elapsed.saturating_add(t.tick);
            t.elapsed
        })
    }

    fn unix_seconds(&self) -> u64 {
        self.with(|t| t.start_unix.saturating_add(t.elapsed.as_secs()))
    }

    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logical_clock_advances_only_when_told() {
        let c = LogicalClock::new();
        assert_eq!(c.elapsed(), Duration::ZERO);
        c.sleep(Duration::from_secs(3));
        assert_eq!(c.elapsed(), Duration::from_secs(3));
        assert_eq!(c.unix_seconds(), LOGICAL_CLOCK_START + 3);
        let shared = c.clone();
        shared.advance(Duration::from_millis(500));
        assert_eq!(c.elapsed(), Duration::from_millis(3500));
        c.set_tick(Duration::from_millis(1));
        assert_eq!(c.elapsed(), Duration::from_millis(3501));
    }

    #[test]
    fn the_system_clock_moves_forward() {
        let c = SystemClock::new();
        let a = c.elapsed();
        c.sleep(Duration::from_millis(2));
        assert!(c.elapsed() > a);
        assert!(c.unix_seconds() > 1_700_000_000);
    }
}
