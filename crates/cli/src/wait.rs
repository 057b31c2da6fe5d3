//! `--wait-lock` for the commands that only open a pool to read it (`info`,
//! `check`): retry while another process holds a part's lock.
//!
//! `sync` waits inside the engine (`SyncOptions::wait_lock`). `info` and
//! `check` open the pool set before they read or write anything, so
//! retrying the open (or, for `check --data`, which is read-only, the
//! whole call) is safe.

use std::path::Path;
use std::time::{Duration, Instant};

use poolsync_engine::open::{self, OpenSet};
use poolsync_engine::Error;
use poolsync_pmem::{Access, Storage};

/// How long to sleep between two attempts.
const RETRY: Duration = Duration::from_millis(100);

/// `true` when `e` says that another process holds a lock.
pub fn is_locked(e: &Error) -> bool {
    matches!(
        e,
        Error::Storage(poolsync_pmem::Error::Locked { .. })
            | Error::PartStorage {
                error: poolsync_pmem::Error::Locked { .. },
                ..
            }
    )
}

/// Runs `attempt` until it does not fail with a lock held by another
/// process, for at most `wait`; after that the lock error becomes
/// [`Error::LockTimeout`]. Without `wait` the first attempt decides.
pub fn retry<T>(
    wait: Option<Duration>,
    mut attempt: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let started = Instant::now();
    loop {
        match attempt() {
            Err(e) if is_locked(&e) => {
                let Some(wait) = wait else {
                    return Err(e);
                };
                let waited = started.elapsed();
                if waited >= wait {
                    let source = match e {
                        Error::Storage(source) | Error::PartStorage { error: source, .. } => source,
                        other => return Err(other),
                    };
                    return Err(Error::LockTimeout {
                        seconds: wait.as_secs(),
                        error: source,
                    });
                }
                std::thread::sleep(RETRY.min(wait - waited));
            }
            other => return other,
        }
    }
}

/// [`open::open`] with [`retry`].
pub fn open<S: Storage>(
    storage: &S,
    path: &Path,
    access: Access,
    wait: Option<Duration>,
) -> Result<OpenSet<S::File>, Error> {
    retry(wait, || open::open(storage, path, access))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn locked() -> Error {
        Error::Storage(poolsync_pmem::Error::Locked {
            path: PathBuf::from("/p/a.part"),
        })
    }

    #[test]
    fn a_lock_that_goes_away_is_waited_for() {
        let mut attempts = 0;
        let result = retry(Some(Duration::from_secs(5)), || {
            attempts += 1;
            if attempts < 3 {
                Err(locked())
            } else {
                Ok(attempts)
            }
        });
        assert_eq!(result.ok(), Some(3));
    }

    #[test]
    fn without_a_wait_the_first_lock_error_is_returned() {
        let mut attempts = 0;
        let result: Result<(), Error> = retry(None, || {
            attempts += 1;
            Err(locked())
        });
        assert!(is_locked(&result.expect_err("locked")));
        assert_eq!(attempts, 1);
    }

    #[test]
    fn a_lock_that_stays_ends_in_a_timeout() {
        let result: Result<(), Error> = retry(Some(Duration::from_millis(250)), || Err(locked()));
        assert!(
            matches!(result, Err(Error::LockTimeout { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut attempts = 0;
        let result: Result<(), Error> = retry(Some(Duration::from_secs(5)), || {
            attempts += 1;
            Err(Error::NotFound {
                path: PathBuf::from("/p/x.set"),
            })
        });
        assert!(matches!(result, Err(Error::NotFound { .. })));
        assert_eq!(attempts, 1);
    }
}
