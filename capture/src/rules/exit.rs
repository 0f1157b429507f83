//! Waiting on the way out: an exit path (a second interrupt, the panic
//! hook) may find another thread removing the rules or asking the rules
//! helper, and waits for it a while, not forever.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// How long an exit path (a second interrupt, the panic hook) waits for a
/// lock another thread may hold while it removes rules or asks the helper.
pub const EXIT_WAIT: Duration = Duration::from_secs(3);

/// `m`'s lock, waiting up to `wait` for it (a poisoned one is taken too:
/// an exit path must still remove rules); `None` if it stayed held.
pub fn lock_within<T>(m: &Mutex<T>, wait: Duration) -> Option<MutexGuard<'_, T>> {
    let deadline = Instant::now() + wait;
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}
