//! Bounded spinning before blocking: how every thread of taps that waits for the next message
//! (the engine's dispatcher, an app waiting for results, thread-pool workers, the process-pool's
//! socket readers, the worker's loop) waits.
//!
//! A blocked thread must be woken by the kernel; on a virtual machine whose CPUs are idle that
//! wake-up (an inter-processor interrupt to a halted vCPU) costs tens of microseconds, several
//! times the rest of a task's round trip. Polling for [`SPIN`] first keeps the next message's
//! latency at a few microseconds when messages come back to back; a thread that finds nothing
//! within the budget blocks as before, so an idle run costs no more than [`SPIN`] of CPU per
//! wait. For the first microseconds the polls are separated by `spin_loop` hints; after that
//! the thread yields between polls, so on a busy machine a spinning thread gives its core to the thread it waits for.
//!
//! ```
//! let (tx, rx) = crossbeam_channel::unbounded();
//! std::thread::spawn(move || tx.send(7).unwrap());
//! assert_eq!(taps::spin::recv(&rx), Ok(7));
//! ```

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError};

/// How long a waiting thread polls before it blocks.
pub const SPIN: Duration = Duration::from_micros(100);

/// Polls without yielding for this long, then yields between polls.
const PURE_SPIN: Duration = Duration::from_micros(2);

/// Calls `poll` until it returns something or `budget` has passed (then `None`), spinning
/// (and, after the first [`PURE_SPIN`], yielding the CPU) between calls.
pub fn until<T>(budget: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    if let Some(t) = poll() {
        return Some(t);
    }
    let start = Instant::now();
    loop {
        let waited = start.elapsed();
        if waited >= budget {
            return None;
        }
        if waited < PURE_SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        if let Some(t) = poll() {
            return Some(t);
        }
    }
}

/// Receives from `rx`, polling for [`SPIN`] before blocking.
pub fn recv<T>(rx: &Receiver<T>) -> Result<T, RecvError> {
    match until(SPIN, || rx.try_recv().ok()) {
        Some(t) => Ok(t),
        None => rx.recv(),
    }
}

/// Receives from `rx` until `deadline`, polling for [`SPIN`] (at most until the deadline)
/// before blocking.
pub fn recv_deadline<T>(rx: &Receiver<T>, deadline: Instant) -> Result<T, RecvTimeoutError> {
    let budget = SPIN.min(deadline.saturating_duration_since(Instant::now()));
    match until(budget, || rx.try_recv().ok()) {
        Some(t) => Ok(t),
        None => rx.recv_deadline(deadline),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_after_the_budget_and_returns_what_arrives() {
        let start = Instant::now();
        assert_eq!(until(Duration::from_micros(200), || None::<()>), None);
        assert!(start.elapsed() >= Duration::from_micros(200));
        let mut n = 0;
        assert_eq!(
            until(Duration::from_secs(60), || {
                n += 1;
                (n == 100).then_some(n)
            }),
            Some(100)
        );
        let (tx, rx) = crossbeam_channel::unbounded::<u8>();
        drop(tx);
        assert!(recv(&rx).is_err(), "a disconnected channel ends the wait");
    }
}
