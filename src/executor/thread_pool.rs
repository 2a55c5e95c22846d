//! `thread-pool`: tasks run on a pool of threads in the driver process; values move by
//! reference, nothing is serialised unless a transformer asks for it.

use std::sync::Arc;

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

/// Runs jobs on `threads` threads of a rayon pool.
pub struct ThreadPool {
    threads: usize,
    pool: Option<rayon::ThreadPool>,
    done: Option<Completer>,
    data: Arc<DataLayer>,
}

impl ThreadPool {
    /// A pool of `threads` threads (started with the engine).
    pub fn new(threads: usize) -> Self {
        ThreadPool { threads: threads.max(1), pool: None, done: None, data: Arc::new(DataLayer::none()) }
    }
}

impl Executor for ThreadPool {
    fn start(&mut self, done: Completer, data: Arc<DataLayer>) -> anyhow::Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .thread_name(|i| format!("taps-worker-{}", i))
            .build()?;
        self.pool = Some(pool);
        self.done = Some(done);
        self.data = data;
        Ok(())
    }

    fn needs_wire(&self) -> bool {
        false
    }

    fn submit(&mut self, job: Job) {
        let (Some(pool), Some(done)) = (&self.pool, &self.done) else {
            return;
        };
        let done = done.clone();
        let data = self.data.clone();
        pool.spawn(move || {
            let (outcome, info) = execute(job.def, job.args, &data, false, job.id);
            done.complete(Completion {
                seq: job.seq,
                outcome,
                execution: Some(info),
                worker: Some(format!("thread-{}", rayon::current_thread_index().unwrap_or(0))),
            });
        });
    }

    fn shutdown(&mut self, _cancel: bool) {
        // Dropping the pool lets running jobs finish in the background; the engine has already
        // waited for them unless the run was interrupted.
        self.pool = None;
        self.done = None;
    }

    fn describe(&self) -> String {
        format!("ThreadPool(max_threads={})", self.threads)
    }
}
