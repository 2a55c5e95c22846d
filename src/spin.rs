//! Bounded spinning before blocking: how every thread of taps that waits for the next message
//! (the engine's dispatcher, an app waiting for results, thread-pool workers, the process-pool's
//! socket readers, the worker's loop) waits.
//!
//! A blocked thread must be woken by the kernel; on a virtual machine whose CPUs are idle that
//! wake-up (an inter-processor interrupt to a halted vCPU) costs tens of microseconds, several
//! times the rest of a task's round trip. Polling for [`SPIN`] first ([`SPIN_ENV`] changes it) keeps the next message's
//! latency at a few microseconds when messages come back to back; a thread that finds nothing
//! within the budget blocks as before, so an idle run costs no more than [`SPIN`] of CPU per
//! wait. For the first microseconds the polls are separated by `spin_loop` hints only; after
//! that the thread yields between polls (a poll may be a system call), so on a busy machine a spinning thread gives its core to the thread it waits for.
//!
//! ```
//! let (tx, rx) = crossbeam_channel::unbounded();
//! std::thread::spawn(move || tx.send(7).unwrap());
//! assert_eq!(taps::spin::recv(&rx), Ok(7));
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError};

/// How long a waiting thread polls before it blocks, unless [`SPIN_ENV`] says otherwise.
pub const SPIN: Duration = Duration::from_micros(100);

/// Environment variable setting the polling budget in microseconds (0: block at once), e.g. on
/// a machine whose cores are all busy, where a spinning thread only takes time from others.
pub const SPIN_ENV: &str = "TAPS_SPIN_US";

/// The budget in µs, `u64::MAX` until first read.
static BUDGET_US: AtomicU64 = AtomicU64::new(u64::MAX);

/// The budget [`SPIN_ENV`] sets, if it is set to a number of microseconds.
fn from_env() -> Option<u64> {
    std::env::var(SPIN_ENV).ok().and_then(|v| v.trim().parse().ok())
}

/// The polling budget: [`SPIN_ENV`] if set to a number of microseconds, else what the run's
/// executor [prefers](prefer_budget), else [`SPIN`].
pub fn budget() -> Duration {
    let us = BUDGET_US.load(Ordering::Relaxed);
    if us != u64::MAX {
        return Duration::from_micros(us);
    }
    let us = from_env().unwrap_or(SPIN.as_micros() as u64);
    BUDGET_US.store(us, Ordering::Relaxed);
    Duration::from_micros(us)
}

/// Sets the budget of this process unless [`SPIN_ENV`] sets it: an executor whose messages come
/// milliseconds apart (a Python engine through the bridge) prefers 0, since polling for the next
/// one never pays off there and only takes CPU from the engine's own processes on the same cores.
pub fn prefer_budget(budget: Duration) {
    if from_env().is_none() {
        BUDGET_US.store(budget.as_micros().min(u64::MAX as u128 - 1) as u64, Ordering::Relaxed);
    }
}

/// Polls are separated by `spin_loop` hints only for this long, then by yields.
const PURE_SPIN: Duration = Duration::from_micros(2);

/// Calls `poll` until it returns something or `budget` has passed (then `None`), spinning
/// (and, after the first [`PURE_SPIN`], yielding the CPU) between calls. The clock is read every
/// eighth poll while spinning and every fourth while yielding (on a VM a clock read costs more
/// than a poll: reading it at every poll was a sixth of a thread-pool run's CPU).
pub fn until<T>(budget: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    if let Some(t) = poll() {
        return Some(t);
    }
    if budget.is_zero() {
        return None;
    }
    let start = Instant::now();
    let mut yielding = false;
    let mut i = 0u32;
    loop {
        i = i.wrapping_add(1);
        if i.is_multiple_of(if yielding { 4 } else { 8 }) {
            let waited = start.elapsed();
            if waited >= budget {
                return None;
            }
            yielding = waited >= PURE_SPIN;
        }
        if yielding {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        if let Some(t) = poll() {
            return Some(t);
        }
    }
}

/// Receives from `rx`, polling (and [helping](help)) for [`budget`] before blocking: how a
/// thread waiting for results waits.
pub fn recv<T>(rx: &Receiver<T>) -> Result<T, RecvError> {
    match until_helping(budget(), || rx.try_recv().ok()) {
        Some(t) => Ok(t),
        None => rx.recv(),
    }
}

/// Receives from `rx` until `deadline`, polling (and [helping](help)) for [`budget`] (at most
/// until the deadline) before blocking.
pub fn recv_deadline<T>(rx: &Receiver<T>, deadline: Instant) -> Result<T, RecvTimeoutError> {
    let budget = budget().min(deadline.saturating_duration_since(Instant::now()));
    match until_helping(budget, || rx.try_recv().ok()) {
        Some(t) => Ok(t),
        None => rx.recv_deadline(deadline),
    }
}

/// [`until`], running the registered [helpers](Helper) between polls: a thread that waits for
/// a result may take it (a finished task's completion) itself instead of waiting for the thread
/// that would hand it over.
pub fn until_helping<T>(budget: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    if HELPER_COUNT.load(Ordering::Acquire) == 0 {
        return until(budget, poll);
    }
    POLLING.fetch_add(1, Ordering::SeqCst);
    let got = until(budget, || poll().or_else(|| if help() { poll() } else { None }));
    if POLLING.fetch_sub(1, Ordering::SeqCst) == 1 && got.is_none() {
        // The last thread that took work stops and blocks: the helpers' own threads take over.
        // (One that got what it waited for is usually back soon; until it is, the helpers'
        // threads look every millisecond or so.)
        let all = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
        for (_, h) in all.iter() {
            h.idle();
        }
    }
    got
}

/// Whether a thread is polling with the helpers now (in [`until_helping`]).
pub fn helpers_polling() -> bool {
    POLLING.load(Ordering::SeqCst) > 0
}

/// Work that a thread waiting for results may do while it polls (see [`register`]): an
/// executor whose completions arrive on its own threads lets the waiting thread take the ones
/// that are ready, one thread hand-off less per task.
pub trait Helper: Send + Sync {
    /// Does what is ready now without blocking; whether it did anything.
    fn help(&self) -> bool;
    /// No thread polls with the helpers any more: the work goes back to the helper's own threads.
    fn idle(&self) {}
}

/// The registered helpers, by registration number.
static HELPERS: Mutex<Vec<(u64, Arc<dyn Helper>)>> = Mutex::new(Vec::new());
/// How many there are (read without the lock on every poll).
static HELPER_COUNT: AtomicUsize = AtomicUsize::new(0);
static NEXT_HELPER: AtomicU64 = AtomicU64::new(0);
/// Threads in [`until_helping`] now.
static POLLING: AtomicUsize = AtomicUsize::new(0);

/// Keeps a helper registered; dropping it unregisters it (waiting until no thread runs it).
#[must_use = "the helper is unregistered when this is dropped"]
pub struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        let mut h = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
        h.retain(|(n, _)| *n != self.0);
        HELPER_COUNT.store(h.len(), Ordering::Release);
    }
}

/// Registers `h`: every thread that waits for a result through [`recv`], [`recv_deadline`] or
/// [`until_helping`] runs it between polls (one thread at a time).
pub fn register(h: Arc<dyn Helper>) -> Registered {
    let n = NEXT_HELPER.fetch_add(1, Ordering::Relaxed);
    let mut all = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
    all.push((n, h));
    HELPER_COUNT.store(all.len(), Ordering::Release);
    Registered(n)
}

/// Runs the registered helpers unless another thread is running them; whether one did anything.
pub fn help() -> bool {
    if HELPER_COUNT.load(Ordering::Acquire) == 0 {
        return false;
    }
    let Ok(all) = HELPERS.try_lock() else { return false };
    let mut did = false;
    for (_, h) in all.iter() {
        did |= h.help();
    }
    did
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

    #[test]
    fn an_executor_can_prefer_a_budget_the_environment_overrides() {
        // The only test that changes the process's budget (others read it).
        let env = from_env();
        prefer_budget(Duration::ZERO);
        assert_eq!(budget(), env.map_or(Duration::ZERO, Duration::from_micros));
        prefer_budget(SPIN);
        assert_eq!(budget(), env.map_or(SPIN, Duration::from_micros));
    }
}
