//! `thread-pool`: tasks run on a pool of threads in the driver process; values move by
//! reference, nothing is serialised unless a transformer asks for it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::{Receiver, Sender, TryRecvError, unbounded};

use crate::data::DataLayer;
use crate::engine::{Completer, Completion, Executor, Job, execute};
use crate::options::Validate;

use super::{ExecutorConfig, ExecutorContext, ExecutorPlugin, WorkerKind, Workers, available_cores};

crate::options! {
    /// Options of the `thread-pool` executor.
    pub(crate) struct ThreadPoolOptions {
        /// Number of worker threads (none = the cores available where the run executes).
        max_threads: Option<usize> = None,
    }
}

impl Validate for ThreadPoolOptions {
    fn validate(&self) -> Result<(), String> {
        if self.max_threads == Some(0) {
            return Err("engine.executor.max_threads must be at least 1".into());
        }
        Ok(())
    }
}

/// The plugin entry.
pub const PLUGIN: ExecutorPlugin = crate::plugin!(
    dyn ExecutorConfig,
    ThreadPoolOptions,
    "thread-pool",
    "a pool of threads in the driver process (no serialisation)"
);

impl ExecutorConfig for ThreadPoolOptions {
    fn get_executor(&self, _: &ExecutorContext) -> anyhow::Result<Box<dyn Executor>> {
        Ok(Box::new(ThreadPool::new(self.threads())))
    }

    fn workers(&self) -> Option<Workers> {
        self.max_threads.map(|n| Workers { key: "max_threads", count: n as u64, kind: WorkerKind::Threads })
    }
}

impl ThreadPoolOptions {
    fn threads(&self) -> usize {
        self.max_threads.unwrap_or_else(available_cores)
    }
}

/// Runs jobs on `threads` threads of its own. An idle worker polls the queue for
/// [`crate::spin::budget`] before it parks, and a submit wakes a parked worker only when none is
/// polling: with tasks coming back to back no thread is woken by the kernel. A worker that takes
/// a job from a queue that still holds more wakes a parked worker for them.
pub struct ThreadPool {
    threads: usize,
    tx: Option<Sender<Job>>,
    shared: Option<Arc<Shared>>,
}

/// What the submitter and the workers share.
struct Shared {
    /// Workers polling the queue (they need no wake-up).
    polling: AtomicUsize,
    /// Parked workers wait here.
    park: Mutex<()>,
    cv: Condvar,
    /// Set by a cancelling shutdown: queued jobs are dropped, not run.
    cancelled: AtomicBool,
}

impl ThreadPool {
    /// A pool of `threads` threads (started with the engine).
    pub fn new(threads: usize) -> Self {
        ThreadPool { threads: threads.max(1), tx: None, shared: None }
    }
}

/// One worker thread: takes jobs until the queue is closed and empty (or the pool is cancelled).
fn work(index: usize, rx: Receiver<Job>, shared: Arc<Shared>, done: Completer, data: Arc<DataLayer>) {
    let label = format!("thread-{}", index);
    let take = || match rx.try_recv() {
        Ok(job) => Some(Some(job)),
        Err(TryRecvError::Disconnected) => Some(None),
        Err(TryRecvError::Empty) => None,
    };
    loop {
        shared.polling.fetch_add(1, Ordering::SeqCst);
        let job = match crate::spin::until(crate::spin::budget(), take) {
            Some(job) => {
                shared.polling.fetch_sub(1, Ordering::SeqCst);
                job
            }
            None => {
                let mut g = shared.park.lock().unwrap_or_else(|e| e.into_inner());
                shared.polling.fetch_sub(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                loop {
                    match rx.try_recv() {
                        Ok(job) => break Some(job),
                        Err(TryRecvError::Disconnected) => break None,
                        Err(TryRecvError::Empty) => g = shared.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                    }
                }
            }
        };
        let Some(job) = job else { return };
        // A job queued while this worker still counted as polling woke nobody (its submitter saw
        // a poller): wake a parked worker for it rather than leave it queued until this one is
        // free. (Either the submitter sees `polling` without this worker, or this sees the job.)
        fence(Ordering::SeqCst);
        if !rx.is_empty() {
            shared.wake(false);
        }
        if shared.cancelled.load(Ordering::Relaxed) {
            continue;
        }
        let (outcome, info) = execute(job.def, job.args, &data, false, job.id);
        done.complete(Completion { seq: job.seq, outcome, execution: Some(info), worker: Some(label.clone()) });
    }
}

impl Shared {
    /// Wakes a parked worker unless one is polling (it takes the job without a wake-up).
    fn wake(&self, all: bool) {
        fence(Ordering::SeqCst);
        if all || self.polling.load(Ordering::SeqCst) == 0 {
            let _g = self.park.lock().unwrap_or_else(|e| e.into_inner());
            if all { self.cv.notify_all() } else { self.cv.notify_one() }
        }
    }
}

impl Executor for ThreadPool {
    fn start(&mut self, done: Completer, data: Arc<DataLayer>) -> anyhow::Result<()> {
        let (tx, rx) = unbounded();
        let shared = Arc::new(Shared {
            polling: AtomicUsize::new(0),
            park: Mutex::new(()),
            cv: Condvar::new(),
            cancelled: AtomicBool::new(false),
        });
        for i in 0..self.threads {
            let (rx, shared, done, data) = (rx.clone(), shared.clone(), done.clone(), data.clone());
            std::thread::Builder::new()
                .name(format!("taps-worker-{}", i))
                .spawn(move || work(i, rx, shared, done, data))?;
        }
        self.tx = Some(tx);
        self.shared = Some(shared);
        Ok(())
    }

    fn needs_wire(&self) -> bool {
        false
    }

    fn submit(&mut self, job: Job) {
        let (Some(tx), Some(shared)) = (&self.tx, &self.shared) else {
            return;
        };
        if tx.send(job).is_ok() {
            shared.wake(false);
        }
    }

    fn shutdown(&mut self, cancel: bool) {
        // Closing the queue lets running jobs finish in the background; the engine has already
        // waited for them unless the run was interrupted (then queued jobs are dropped).
        if let Some(shared) = &self.shared {
            shared.cancelled.store(cancel, Ordering::Relaxed);
        }
        self.tx = None;
        if let Some(shared) = self.shared.take() {
            shared.wake(true);
        }
    }

    fn describe(&self) -> String {
        format!("ThreadPool(max_threads={})", self.threads)
    }

    /// Submitting is a queue push and a wake-up check; a completion is finished on the worker.
    fn direct(&self) -> bool {
        true
    }
}
