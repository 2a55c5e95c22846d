//! The engine: submits tasks, resolves dependencies, dispatches ready tasks to an executor,
//! records every task, and hands results back through [`TaskFuture`]s.
//!
//! `submit` never blocks on execution. A task whose arguments are all ready goes to a
//! [direct](Executor::direct) executor from the submitting thread, and is finished (record
//! queued, future set) on the thread that reports its completion; everything else — tasks
//! waiting for parents, cancellation, interrupts, shutdown, other executors' jobs — is handled on
//! one dispatcher thread fed by a channel, which also writes the records.
//!
//! ```
//! use taps::engine::{Engine, builtin::Sleep};
//! use taps::executor::thread_pool::ThreadPool;
//!
//! let engine = Engine::builder(Box::new(ThreadPool::new(2))).build();
//! let a = engine.submit::<Sleep>((0.0.into(),));
//! let b = engine.submit::<Sleep>((0.0.into(),));
//! assert!(a.result().is_ok() && b.result().is_ok());
//! let summary = engine.shutdown();
//! assert_eq!(summary.records, 2);
//! ```

use std::collections::HashMap;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use uuid::Uuid;

use crate::data::{DataLayer, Moved};
use crate::record::{ExecutionInfo, RecordWriter, TaskRecord, now};
use crate::task::{
    Data, ErrorKind, FailedParent, Payload, Registry, Slot, Task, TaskArgs, TaskContext, TaskDef, TaskError,
};

/// A task ready to run: its definition and resolved argument payloads.
pub struct Job {
    /// Engine-internal sequence number; echo it in the [`Completion`].
    pub seq: u64,
    /// The task's id (its record's `task_id`; pass it on to [`execute`], which gives it to the
    /// task in its [context](crate::task::context) with the data layer's run directory).
    pub id: Uuid,
    /// The task.
    pub def: &'static TaskDef,
    /// Top-level arguments (in-process, serialised, or references).
    pub args: Vec<Payload>,
}

/// What an executor reports when a job ends.
pub struct Completion {
    /// The job's sequence number.
    pub seq: u64,
    /// Result payload or error.
    pub outcome: Result<Payload, TaskError>,
    /// Worker-side timings, if the wrapper ran.
    pub execution: Option<ExecutionInfo>,
    /// Which worker ran it.
    pub worker: Option<String>,
}

/// Runs jobs somewhere and reports completions.
pub trait Executor: Send {
    /// Called once, on the dispatcher thread, before any job: where to report completions.
    fn start(&mut self, done: Completer, data: Arc<DataLayer>) -> anyhow::Result<()>;
    /// Whether jobs must carry serialised payloads (true for anything out of process).
    fn needs_wire(&self) -> bool;
    /// Queues a job (never blocks on execution).
    fn submit(&mut self, job: Job);
    /// Stops the workers. With `cancel`, abandons running jobs instead of waiting for them.
    fn shutdown(&mut self, cancel: bool);
    /// Short description for the log.
    fn describe(&self) -> String;
    /// The reference a child may take as the argument of job `seq`, which was submitted and has
    /// not finished, if this executor resolves dependencies itself (an engine whose results stay
    /// on its workers: Dask, Ray, Parsl). Where it gives one for every unfinished parent, the
    /// dispatcher hands the child over at once instead of waiting for its parents; the
    /// executor's child then fails if a parent fails, and the engine records it as `ParentFailed`.
    /// Default: none (children wait until their parents finished).
    fn pending_ref(&self, _seq: u64) -> Option<crate::task::DataRef> {
        None
    }
    /// Whether the engine may bypass its dispatcher thread: call [`submit`](Executor::submit)
    /// from the thread that submits a task whose arguments are all ready (under a lock, never two
    /// at once), and finish a task on the thread that reports its [`Completion`]. A task with an
    /// unfinished parent still goes through the dispatcher (and may get
    /// [`pending_ref`](Executor::pending_ref)s); its completion too, when it comes before a
    /// parent's. Default: no (every job and completion passes through the dispatcher thread).
    fn direct(&self) -> bool {
        false
    }
}

/// Where executors report completions.
#[derive(Clone)]
pub struct Completer {
    tx: Sender<Msg>,
    /// For a [direct](Executor::direct) executor: the task is finished on the reporting thread.
    book: Option<Arc<Book>>,
}

impl Completer {
    /// Reports one finished job.
    pub fn complete(&self, c: Completion) {
        match &self.book {
            Some(book) => book.complete(c),
            None => {
                let _ = self.tx.send(Msg::Done(c));
            }
        }
    }
}

/// Shared state of one task, held by its futures and by the dispatcher.
pub struct TaskCell {
    seq: u64,
    id: Uuid,
    name: &'static str,
    state: Mutex<CellState>,
    cv: Condvar,
    /// Set once the outcome is in (polled by waiters before they block).
    finished: AtomicBool,
    data: Arc<DataLayer>,
}

#[derive(Default)]
struct CellState {
    outcome: Option<Result<Payload, TaskError>>,
    /// Threads blocked on `cv` (no wake-up call when there are none).
    sleepers: usize,
    listeners: Vec<(Sender<usize>, usize)>,
    /// For a task that failed because a parent failed: the failure that started the chain
    /// (`task NAME (ID) failed: TYPE: MESSAGE`).
    origin: Option<Arc<str>>,
    /// The dispatcher saw this task unfinished while a child waited for it: its outcome must
    /// reach the dispatcher (set and read under the lock, with `outcome`).
    watched: bool,
}

impl TaskCell {
    /// Stores the outcome and wakes its waiters; whether the dispatcher watches this task.
    fn finish(&self, outcome: Result<Payload, TaskError>) -> bool {
        let (listeners, sleepers, watched) = {
            let mut st = self.state.lock().unwrap();
            st.outcome = Some(outcome);
            self.finished.store(true, Ordering::Release);
            (std::mem::take(&mut st.listeners), st.sleepers, st.watched)
        };
        if sleepers > 0 {
            self.cv.notify_all();
        }
        for (tx, i) in listeners {
            let _ = tx.send(i);
        }
        watched
    }

    fn outcome(&self) -> Option<Result<Payload, TaskError>> {
        self.state.lock().unwrap().outcome.clone()
    }

    /// The outcome, or (when there is none yet) a note that the dispatcher waits for it.
    fn outcome_or_watch(&self) -> Option<Result<Payload, TaskError>> {
        let mut st = self.state.lock().unwrap();
        if st.outcome.is_none() {
            st.watched = true;
        }
        st.outcome.clone()
    }

    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Whether the result is a reference to a value stored out of band (released on drop).
    fn stored_out_of_band(&self) -> bool {
        matches!(self.state.lock().unwrap().outcome, Some(Ok(Payload::Ref(_))))
    }

    fn subscribe(&self, tx: &Sender<usize>, i: usize) {
        let mut st = self.state.lock().unwrap();
        if st.outcome.is_some() {
            let _ = tx.send(i);
        } else {
            st.listeners.push((tx.clone(), i));
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Option<Result<Payload, TaskError>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let budget = timeout.map_or(crate::spin::budget(), |t| t.min(crate::spin::budget()));
        crate::spin::until_helping(budget, || self.finished.load(Ordering::Acquire).then_some(()));
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(o) = &st.outcome {
                return Some(o.clone());
            }
            st.sleepers += 1;
            match deadline {
                None => st = self.cv.wait(st).unwrap(),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        st.sleepers -= 1;
                        return None;
                    }
                    st = self.cv.wait_timeout(st, left).unwrap().0;
                }
            }
            st.sleepers -= 1;
        }
    }
}

/// The last holder of a task's cell is gone (every future of it dropped, every child that takes it
/// finished): nothing can read its result again, so where it is stored out of band (a
/// transformer's key or file, an engine's worker) it is released now rather than at the end of the run.
impl Drop for TaskCell {
    fn drop(&mut self) {
        if let Ok(st) = self.state.get_mut()
            && let Some(Ok(Payload::Ref(r))) = &st.outcome
        {
            release_ref(&self.data, r);
        }
    }
}

/// The future result of a submitted task. Pass `&future` as an argument to make a dependency.
pub struct TaskFuture<T> {
    cell: Arc<TaskCell>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for TaskFuture<T> {
    fn clone(&self) -> Self {
        TaskFuture { cell: self.cell.clone(), _t: PhantomData }
    }
}

impl<T> std::fmt::Debug for TaskFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskFuture({} {})", self.cell.name, self.cell.id)
    }
}

/// `result_timeout` ran out before the task finished.
#[derive(Debug, thiserror::Error)]
#[error("timed out waiting for task results")]
pub struct Timeout;

impl<T> TaskFuture<T> {
    /// The task's UUID (its `task_id` in `tasks.jsonl`).
    pub fn task_id(&self) -> Uuid {
        self.cell.id
    }

    /// The task's name.
    pub fn name(&self) -> &'static str {
        self.cell.name
    }

    /// Whether the task has finished (successfully or not).
    pub fn done(&self) -> bool {
        self.cell.finished.load(Ordering::Acquire)
    }

    /// Blocks until done; the error if it failed.
    pub fn exception(&self) -> Option<TaskError> {
        self.cell.wait(None).and_then(|o| o.err())
    }

    /// The shared cell (used to pass the future as an argument).
    pub fn cell(&self) -> &Arc<TaskCell> {
        &self.cell
    }

    /// A typed future over a cell (for [`SubmitHook`]s; `T` must be the task's output type).
    pub fn from_cell(cell: Arc<TaskCell>) -> Self {
        TaskFuture { cell, _t: PhantomData }
    }
}

impl<T: Data> TaskFuture<T> {
    /// Blocks until the task finishes and returns its result (resolved and decoded here).
    pub fn result(&self) -> Result<T, TaskError> {
        let outcome = self.cell.wait(None).expect("wait without timeout returns");
        self.decode(outcome)
    }

    /// Like [`result`](Self::result), giving up after `timeout`.
    pub fn result_timeout(&self, timeout: Duration) -> Result<Result<T, TaskError>, Timeout> {
        match self.cell.wait(Some(timeout)) {
            Some(o) => Ok(self.decode(o)),
            None => Err(Timeout),
        }
    }

    fn decode(&self, outcome: Result<Payload, TaskError>) -> Result<T, TaskError> {
        let p = self.cell.data.resolve(fetch_held(outcome?)?)?;
        p.decode()
    }
}

/// Results an executor leaves where they were made (an engine's workers) and fetches only when
/// a caller asks ([`TaskFuture::result`]). Such a result is a [`Payload::Ref`] whose key
/// [`held_ref`] made; the dispatcher passes it to children like any reference, and the executor
/// turns it back into the engine's own future there, so the value moves between workers only.
pub trait HeldValues: Send + Sync {
    /// The value of `key` (the key given to [`held_ref`]), fetched from where it is held.
    fn fetch(&self, key: &str) -> Result<Payload, TaskError>;
    /// Nothing will ask for `key` again (its task's futures are dropped and its children
    /// finished): the holder may forget it. Called from any thread, at most once per key.
    fn release(&self, _key: &str) {}
}

/// Key prefix of held results.
const HELD_PREFIX: &str = "taps-held:";

/// Holders of results, by id.
static HOLDERS: Mutex<Option<HashMap<u64, Arc<dyn HeldValues>>>> = Mutex::new(None);

/// Registers a holder of results for as long as the returned id is not [released](release_held).
pub fn register_held(h: Arc<dyn HeldValues>) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    HOLDERS.lock().unwrap().get_or_insert_with(HashMap::new).insert(id, h);
    id
}

/// Forgets a holder (its results can no longer be fetched).
pub fn release_held(id: u64) {
    if let Some(m) = HOLDERS.lock().unwrap().as_mut() {
        m.remove(&id);
    }
}

/// The reference to a result of `size` bytes held by holder `id` under `key`.
pub fn held_ref(id: u64, key: &str, size: u64) -> crate::task::DataRef {
    crate::task::DataRef { key: format!("{}{}:{}", HELD_PREFIX, id, key), size }
}

/// The holder id and key of a held result's reference, if `r` is one.
pub fn held_key(r: &crate::task::DataRef) -> Option<(u64, &str)> {
    let (id, key) = r.key.strip_prefix(HELD_PREFIX)?.split_once(':')?;
    Some((id.parse().ok()?, key))
}

/// Fetches a held result from its holder; other payloads pass through.
fn fetch_held(p: Payload) -> Result<Payload, TaskError> {
    let Payload::Ref(r) = &p else { return Ok(p) };
    let Some((id, key)) = held_key(r) else { return Ok(p) };
    let holder = HOLDERS.lock().unwrap().as_ref().and_then(|m| m.get(&id).cloned());
    match holder {
        Some(h) => h.fetch(key),
        None => Err(TaskError::new(
            ErrorKind::UnresolvedReference,
            "this result stayed in the engine that ran the task, which has shut down: ask for it before the engine \
             shuts down",
        )),
    }
}

/// Releases a result stored out of band: a held one at its holder (if still registered), any
/// other reference at the data layer's transformer.
fn release_ref(data: &DataLayer, r: &crate::task::DataRef) {
    match held_key(r) {
        Some((id, key)) => {
            let holder = HOLDERS.lock().unwrap().as_ref().and_then(|m| m.get(&id).cloned());
            if let Some(h) = holder {
                h.release(key);
            }
        }
        None => data.release(r),
    }
}

/// When [`wait`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as one future is done.
    FirstCompleted,
    /// As soon as one future fails, or all are done.
    FirstException,
    /// When all are done.
    AllCompleted,
}

/// The futures split into done and not done, each in input order.
#[derive(Debug)]
pub struct Waited<T> {
    /// Finished futures.
    pub done: Vec<TaskFuture<T>>,
    /// Unfinished futures.
    pub not_done: Vec<TaskFuture<T>>,
}

/// Waits for futures, as Python's `concurrent.futures.wait`.
pub fn wait<T>(futures: &[TaskFuture<T>], timeout: Option<Duration>, when: ReturnWhen) -> Waited<T> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let (tx, rx) = unbounded();
    for (i, f) in futures.iter().enumerate() {
        f.cell.subscribe(&tx, i);
    }
    let mut finished = vec![false; futures.len()];
    let mut n = 0;
    while n < futures.len() {
        let got = match deadline {
            None => crate::spin::recv(&rx).ok(),
            Some(d) => crate::spin::recv_deadline(&rx, d).ok(),
        };
        let Some(i) = got else { break };
        if !finished[i] {
            finished[i] = true;
            n += 1;
        }
        let failed = || matches!(futures[i].cell.outcome(), Some(Err(_)));
        match when {
            ReturnWhen::FirstCompleted => break,
            ReturnWhen::FirstException if failed() => break,
            _ => {}
        }
    }
    // Anything finished meanwhile counts as done too.
    let mut out = Waited { done: Vec::new(), not_done: Vec::new() };
    for f in futures {
        if f.done() { out.done.push(f.clone()) } else { out.not_done.push(f.clone()) }
    }
    out
}

/// Yields futures as they finish (successfully or not); stops with `Err(Timeout)` at the deadline.
pub fn as_completed<T>(futures: Vec<TaskFuture<T>>, timeout: Option<Duration>) -> AsCompleted<T> {
    let (tx, rx) = unbounded();
    for (i, f) in futures.iter().enumerate() {
        f.cell.subscribe(&tx, i);
    }
    AsCompleted { left: futures.len(), futures, rx, deadline: timeout.map(|t| Instant::now() + t) }
}

/// Iterator returned by [`as_completed`].
pub struct AsCompleted<T> {
    futures: Vec<TaskFuture<T>>,
    rx: Receiver<usize>,
    left: usize,
    deadline: Option<Instant>,
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Result<TaskFuture<T>, Timeout>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let got = match self.deadline {
            None => crate::spin::recv(&self.rx).ok(),
            Some(d) => crate::spin::recv_deadline(&self.rx, d).ok(),
        };
        match got {
            Some(i) => {
                self.left -= 1;
                Some(Ok(self.futures[i].clone()))
            }
            None => {
                self.left = 0;
                Some(Err(Timeout))
            }
        }
    }
}

/// Futures that come back in completion order: push as you submit, take as they finish.
/// Cheaper than repeated [`wait`] calls for long-running loops (each future is watched once).
pub struct Completions<T> {
    tx: Sender<usize>,
    rx: Receiver<usize>,
    slots: Vec<Option<TaskFuture<T>>>,
    free: Vec<usize>,
    pending: usize,
}

impl<T> Default for Completions<T> {
    fn default() -> Self {
        let (tx, rx) = unbounded();
        Completions { tx, rx, slots: Vec::new(), free: Vec::new(), pending: 0 }
    }
}

impl<T> Completions<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches `f`.
    pub fn push(&mut self, f: TaskFuture<T>) {
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        f.cell.subscribe(&self.tx, i);
        self.slots[i] = Some(f);
        self.pending += 1;
    }

    /// Number of watched futures not yet returned.
    pub fn pending(&self) -> usize {
        self.pending
    }

    fn take(&mut self, i: usize) -> Option<TaskFuture<T>> {
        let f = self.slots[i].take();
        self.free.push(i);
        self.pending -= 1;
        f
    }
}

/// Yields the next finished future (blocking); ends when nothing is pending.
impl<T> Iterator for Completions<T> {
    type Item = TaskFuture<T>;
    fn next(&mut self) -> Option<TaskFuture<T>> {
        if self.pending == 0 {
            return None;
        }
        let i = crate::spin::recv(&self.rx).ok()?;
        self.take(i)
    }
}

/// Messages to the dispatcher thread.
pub enum Msg {
    /// A new task.
    Submit(Box<Submission>),
    /// An executor finished a job.
    Done(Completion),
    /// Cancel a task that has not started.
    Cancel(u64),
    /// Ctrl-C: fail everything not finished, stop the executor.
    Interrupt,
    /// Drain and stop; the summary goes back on the channel.
    Shutdown(Sender<EngineSummary>),
    /// A task the dispatcher watches finished on another thread (its record is queued): feed
    /// its outcome to the children waiting for it.
    Released(Arc<TaskCell>, Result<Payload, TaskError>),
    /// A task finished on another thread while the dispatcher held completions that came
    /// before a parent's ([`Book::early`]): those waiting for this one go on.
    Settled(u64),
    /// Records were queued while none were: write them within 2 ms. ([`Msg::Released`]
    /// says so too.)
    Records,
    /// The last running task finished while the dispatcher waits for them all.
    Drained,
}

/// A task as submitted (internal).
pub struct Submission {
    cell: Arc<TaskCell>,
    def: &'static TaskDef,
    slots: Vec<Slot>,
    submit_time: f64,
}

/// Counters shared with the progress display.
#[derive(Default)]
pub struct Counters {
    /// Tasks submitted.
    pub submitted: AtomicU64,
    /// Tasks finished (any outcome).
    pub finished: AtomicU64,
    /// Tasks failed.
    pub failed: AtomicU64,
}

/// What the engine did, returned by [`Engine::shutdown`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineSummary {
    /// Tasks submitted.
    pub submitted: u64,
    /// Records written.
    pub records: u64,
    /// Tasks that failed (including parent failures and cancellations).
    pub failed: u64,
    /// Whether the run was interrupted.
    pub interrupted: bool,
    /// Error closing the data layer or writing records, if any.
    pub error: Option<String>,
    /// Submissions and completions the dispatcher thread handled itself (with a
    /// [direct](Executor::direct) executor, only those of tasks that waited for a parent).
    pub through_dispatcher: u64,
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    executor: Box<dyn Executor>,
    data: DataLayer,
    records: RecordWriter,
    run_dir: Option<PathBuf>,
}

impl EngineBuilder {
    /// Sets the run directory tasks see in their [`context`](crate::task::context) (default: none;
    /// a task that asks for it gets an error).
    pub fn run_dir(mut self, run_dir: &Path) -> Self {
        self.run_dir = Some(run_dir.to_path_buf());
        self
    }

    /// Sets the data layer (default: everything inline).
    pub fn data(mut self, data: DataLayer) -> Self {
        self.data = data;
        self
    }

    /// Sets the record writer (default: records are counted, not written).
    pub fn records(mut self, records: RecordWriter) -> Self {
        self.records = records;
        self
    }

    /// Starts the executor and the dispatcher thread.
    pub fn try_build(self) -> anyhow::Result<Engine> {
        let mut data = self.data;
        if let Some(d) = &self.run_dir {
            data.set_run_dir(d);
        }
        Engine::start(self.executor, Arc::new(data), self.records)
    }

    /// Like [`try_build`](Self::try_build), panicking if the executor cannot start.
    pub fn build(self) -> Engine {
        self.try_build().expect("executor failed to start")
    }
}

/// Submits tasks and tracks them until shutdown.
pub struct Engine {
    core: Arc<Core>,
    hook: Option<Arc<dyn SubmitHook>>,
    /// Only the engine that started the dispatcher shuts it down (views do not).
    root: bool,
}

struct Core {
    tx: Sender<Msg>,
    data: Arc<DataLayer>,
    counters: Arc<Counters>,
    book: Arc<Book>,
    /// The executor (submitted to directly when it is [direct](Executor::direct)).
    executor: Arc<Mutex<Box<dyn Executor>>>,
    next_seq: AtomicU64,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    summary: Mutex<Option<EngineSummary>>,
    executor_name: String,
}

/// Intercepts submissions made through an engine view ([`Engine::with_hook`]), e.g. to inject
/// failures into another app's tasks.
pub trait SubmitHook: Send + Sync {
    /// Called instead of the plain submit; `base` submits without the hook. `name` is the name
    /// the task is recorded under.
    fn submit(&self, base: &Engine, def: &'static TaskDef, name: &'static str, slots: Vec<Slot>) -> Arc<TaskCell>;
}

impl Engine {
    /// An engine on `executor`, with no data layer and no record file.
    pub fn builder(executor: Box<dyn Executor>) -> EngineBuilder {
        EngineBuilder { executor, data: DataLayer::none(), records: RecordWriter::null(), run_dir: None }
    }

    fn start(mut executor: Box<dyn Executor>, data: Arc<DataLayer>, records: RecordWriter) -> anyhow::Result<Engine> {
        let (tx, rx) = unbounded();
        let counters = Arc::new(Counters::default());
        let book = Arc::new(Book {
            tx: tx.clone(),
            data: data.clone(),
            counters: counters.clone(),
            wire: executor.needs_wire(),
            direct: executor.direct(),
            table: Mutex::new(Table::default()),
            records: Mutex::new(Vec::new()),
            interrupted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            early: AtomicUsize::new(0),
        });
        let done = Completer { tx: tx.clone(), book: book.direct.then(|| book.clone()) };
        executor.start(done, data.clone())?;
        let executor_name = executor.describe();
        let executor = Arc::new(Mutex::new(executor));
        let d = Dispatcher {
            rx,
            executor: executor.clone(),
            book: book.clone(),
            records,
            waiting: HashMap::new(),
            dependents: HashMap::new(),
            early: HashMap::new(),
            interrupted: false,
            signalled: false,
            write_error: None,
            unflushed_since: None,
            batch: 0,
            flush_after: FLUSH_AFTER,
            queued: Vec::new(),
            handled: 0,
        };
        let handle = std::thread::Builder::new().name("taps-dispatch".into()).spawn(move || d.run())?;
        let core = Core {
            tx,
            data,
            counters,
            book,
            executor,
            next_seq: AtomicU64::new(0),
            dispatcher: Mutex::new(Some(handle)),
            summary: Mutex::new(None),
            executor_name,
        };
        Ok(Engine { core: Arc::new(core), hook: None, root: true })
    }

    /// A view of this engine whose submissions go through `hook`. Shutting the view down or
    /// dropping it does nothing; the engine it came from owns the run.
    pub fn with_hook(&self, hook: Arc<dyn SubmitHook>) -> Engine {
        Engine { core: self.core.clone(), hook: Some(hook), root: false }
    }

    fn base(&self) -> Engine {
        Engine { core: self.core.clone(), hook: None, root: false }
    }

    /// Submits task `T`; arguments are values or `&TaskFuture`s of earlier tasks (`.into()`).
    pub fn submit<T: Task>(&self, args: <T::Args as TaskArgs>::Submit) -> TaskFuture<T::Output> {
        let def: &'static TaskDef = task_def::<T>();
        self.submit_def(def, T::Args::into_slots(args))
    }

    /// Submits an erased task with prepared slots (used by wrappers such as the failures app).
    pub fn submit_def<O>(&self, def: &'static TaskDef, slots: Vec<Slot>) -> TaskFuture<O> {
        self.submit_named(def, def.name, slots)
    }

    /// Like [`submit_def`](Self::submit_def), recording the task under `name`.
    pub fn submit_named<O>(&self, def: &'static TaskDef, name: &'static str, slots: Vec<Slot>) -> TaskFuture<O> {
        let cell = match &self.hook {
            Some(h) => h.submit(&self.base(), def, name, slots),
            None => self.submit_raw(def, name, slots),
        };
        TaskFuture::from_cell(cell)
    }

    fn submit_raw(&self, def: &'static TaskDef, name: &'static str, slots: Vec<Slot>) -> Arc<TaskCell> {
        let submit_time = now();
        let seq = self.core.next_seq.fetch_add(1, Ordering::Relaxed);
        let cell = Arc::new(TaskCell {
            seq,
            id: new_task_id(),
            name,
            state: Mutex::new(CellState::default()),
            cv: Condvar::new(),
            finished: AtomicBool::new(false),
            data: self.core.data.clone(),
        });
        self.core.counters.submitted.fetch_add(1, Ordering::Relaxed);
        // The arguments are only evaluated when TRACE lines are wanted.
        tracing::trace!(target: "taps.engine", "Submitted task to executor (id={}, name={}, parents=[{}])", cell.id, name,
            slots.iter().filter_map(|s| match s { Slot::Future(p) => Some(p.id.to_string()), _ => None }).collect::<Vec<_>>().join(", "));
        let slots = match self.core.book.direct {
            true => match self.submit_direct(&cell, def, slots, submit_time) {
                Ok(()) => return cell,
                Err(slots) => slots,
            },
            false => slots,
        };
        let sub = Submission { cell: cell.clone(), def, slots, submit_time };
        if self.core.tx.send(Msg::Submit(Box::new(sub))).is_err() {
            cell.finish(Err(TaskError::new(
                ErrorKind::EngineShutdown,
                "the engine was shut down before this task was submitted",
            )));
        }
        cell
    }

    /// The fast path of a [direct](Executor::direct) executor: a task whose parents all
    /// finished successfully goes to the executor from this thread, without the dispatcher.
    /// Gives the slots back when the task needs the dispatcher (a parent unfinished or failed,
    /// the run interrupted or closing).
    fn submit_direct(
        &self,
        cell: &Arc<TaskCell>,
        def: &'static TaskDef,
        slots: Vec<Slot>,
        submit_time: f64,
    ) -> Result<(), Vec<Slot>> {
        let book = &self.core.book;
        let ready = |s: &Slot| match s {
            Slot::Value(_) => true,
            Slot::Future(p) => p.is_finished() && matches!(p.state.lock().unwrap().outcome, Some(Ok(_))),
        };
        if book.interrupted.load(Ordering::Acquire) || book.closed.load(Ordering::Acquire) || !slots.iter().all(ready) {
            return Err(slots);
        }
        let mut args = Vec::with_capacity(slots.len());
        let mut parents = Vec::new();
        let mut cells = Vec::new();
        for slot in slots {
            match slot {
                Slot::Value(p) => args.push(p),
                Slot::Future(parent) => {
                    parents.push(parent.id);
                    let Some(Ok(p)) = parent.outcome() else { unreachable!("a finished, successful parent") };
                    args.push(p);
                    // As in `Dispatcher::dispatch`: only a result stored out of band must outlive this task.
                    if parent.stored_out_of_band() {
                        cells.push(parent);
                    }
                }
            }
        }
        let w = Ready { cell: cell.clone(), def, args, parents, submit_time, cells, pending: Vec::new() };
        let closed = || match book.interrupted.load(Ordering::Acquire) {
            true => TaskError::new(ErrorKind::Interrupted, "the run was interrupted before this task started"),
            false => {
                TaskError::new(ErrorKind::EngineShutdown, "the engine was shut down before this task was submitted")
            }
        };
        if let Some((cell, outcome)) = book.dispatch(w, &self.core.executor, closed) {
            let _ = book.tx.send(Msg::Released(cell, outcome));
        }
        Ok(())
    }

    /// Submits one task per argument tuple, eagerly; futures in input order.
    pub fn map<T: Task>(
        &self,
        args: impl IntoIterator<Item = <T::Args as TaskArgs>::Submit>,
    ) -> Vec<TaskFuture<T::Output>> {
        args.into_iter().map(|a| self.submit::<T>(a)).collect()
    }

    /// Asks the dispatcher to cancel a task that has not started (it is recorded as `Cancelled`).
    pub fn cancel<T>(&self, f: &TaskFuture<T>) {
        let _ = self.core.tx.send(Msg::Cancel(f.cell.seq));
    }

    /// Number of tasks submitted so far (including map items, warmups and injected tasks).
    pub fn tasks_executed(&self) -> u64 {
        self.core.counters.submitted.load(Ordering::Relaxed)
    }

    /// Live counters (for progress display).
    pub fn counters(&self) -> Arc<Counters> {
        self.core.counters.clone()
    }

    /// The executor's description.
    pub fn executor_name(&self) -> &str {
        &self.core.executor_name
    }

    /// Fails every unfinished task as `Interrupted` and stops the executor without waiting.
    pub fn interrupt(&self) {
        let _ = self.core.tx.send(Msg::Interrupt);
    }

    /// A handle that can interrupt this engine from another thread (signal handler).
    pub fn interrupter(&self) -> Interrupter {
        Interrupter(self.core.tx.clone())
    }

    /// Waits for every task, stops the executor, closes the data layer and flushes records.
    /// Idempotent: later calls return the same summary.
    pub fn shutdown(&self) -> EngineSummary {
        if !self.root {
            return EngineSummary::default();
        }
        let mut guard = self.core.summary.lock().unwrap();
        if let Some(s) = &*guard {
            return s.clone();
        }
        let (tx, rx) = unbounded();
        let summary = if self.core.tx.send(Msg::Shutdown(tx)).is_ok() {
            rx.recv().unwrap_or_else(|_| EngineSummary {
                error: Some("the dispatcher thread died".into()),
                ..Default::default()
            })
        } else {
            EngineSummary { error: Some("the dispatcher thread died".into()), ..Default::default() }
        };
        if let Some(h) = self.core.dispatcher.lock().unwrap().take() {
            let _ = h.join();
        }
        *guard = Some(summary.clone());
        summary
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.root {
            self.shutdown();
        }
    }
}

/// Interrupts an engine from another thread.
#[derive(Clone)]
pub struct Interrupter(Sender<Msg>);

impl Interrupter {
    /// Same as [`Engine::interrupt`].
    pub fn interrupt(&self) {
        let _ = self.0.send(Msg::Interrupt);
    }
}

/// A random (version 4) UUID from a per-thread generator seeded once from the OS: a submit
/// makes no system call for its id.
fn new_task_id() -> Uuid {
    use rand::{Rng, SeedableRng, rngs::SmallRng};
    thread_local! {
        static RNG: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(SmallRng::from_os_rng());
    }
    RNG.with(|r| uuid::Builder::from_random_bytes(r.borrow_mut().random()).into_uuid())
}

/// The static definition of `T` (one per task type, created on first use).
pub fn task_def<T: Task>() -> &'static TaskDef {
    // Registered tasks are found by name; unregistered ones (tests, examples) get a leaked
    // definition once per type, which works on in-process executors only.
    if let Some(d) = crate::task::registry().get(T::NAME) {
        return d;
    }
    static EXTRA: Mutex<Option<HashMap<std::any::TypeId, &'static TaskDef>>> = Mutex::new(None);
    let mut m = EXTRA.lock().unwrap();
    m.get_or_insert_with(HashMap::new)
        .entry(std::any::TypeId::of::<T>())
        .or_insert_with(|| Box::leak(Box::new(crate::task::def::<T>())))
}

struct Waiting {
    sub: Submission,
    args: Vec<Option<Payload>>,
    missing: usize,
    parents: Vec<Uuid>,
    /// The parents' cells, kept until this task finished (their results stay readable for it).
    cells: Vec<Arc<TaskCell>>,
    /// Parents not finished when this task went to the executor ([`Executor::pending_ref`]).
    pending: Vec<Arc<TaskCell>>,
}

/// A task whose arguments are all there, on its way to the executor.
struct Ready {
    cell: Arc<TaskCell>,
    def: &'static TaskDef,
    args: Vec<Payload>,
    parents: Vec<Uuid>,
    submit_time: f64,
    /// Parents whose results are stored out of band: see [`Running::_cells`].
    cells: Vec<Arc<TaskCell>>,
    pending: Vec<Arc<TaskCell>>,
}

struct Running {
    cell: Arc<TaskCell>,
    parents: Vec<Uuid>,
    submit_time: f64,
    moved: Moved,
    /// Kept alive until this task finished: see [`Waiting::cells`].
    _cells: Vec<Arc<TaskCell>>,
    pending: Vec<Arc<TaskCell>>,
    /// Its arguments the data layer stored: released when it finished.
    stored: Vec<crate::task::DataRef>,
}

/// A task that finished and is recorded, whose outcome the dispatcher must feed to the children
/// waiting for it (it was [watched](CellState::watched)).
type Released = (Arc<TaskCell>, Result<Payload, TaskError>);

/// What the dispatcher thread shares with the threads that submit and finish tasks: the running
/// tasks and the records not yet written. With a [direct](Executor::direct) executor a task whose
/// arguments are ready goes to the executor from the submitting thread, and a completion is
/// handled on the thread that reports it; the dispatcher keeps what needs one thread (tasks
/// waiting for parents, cancellation, interrupts, shutdown) and writes the records.
struct Book {
    tx: Sender<Msg>,
    data: Arc<DataLayer>,
    counters: Arc<Counters>,
    wire: bool,
    direct: bool,
    table: Mutex<Table>,
    /// Records queued for the dispatcher to write, in the order the tasks finished.
    records: Mutex<Vec<TaskRecord>>,
    /// Set at an interrupt: new tasks go through the dispatcher.
    interrupted: AtomicBool,
    /// Mirrors [`Table::closed`], read without the lock.
    closed: AtomicBool,
    /// Completions the dispatcher holds (or is about to hold) until a parent finished
    /// ([`Dispatcher::early`]): a task finished on another thread meanwhile says so
    /// ([`Msg::Settled`]).
    early: AtomicUsize,
}

/// The tasks at the executor.
#[derive(Default)]
struct Table {
    running: HashMap<u64, Running>,
    /// Completions taken out of `running` on other threads whose record is not queued yet.
    settling: usize,
    /// The dispatcher waits for `running` to empty (shutdown, interrupt): tell it when it does.
    draining: bool,
    /// No task goes to the executor any more (it is stopping).
    closed: bool,
}

impl Table {
    fn idle(&self) -> bool {
        self.running.is_empty() && self.settling == 0
    }
}

impl Book {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a record (before the task's outcome is visible: a parent's record comes before
    /// its children's) and tells the dispatcher when the queue was empty.
    fn push_record(&self, r: TaskRecord) {
        if self.queue_record(r) {
            let _ = self.tx.send(Msg::Records);
        }
    }

    /// Queues a record; whether the dispatcher must be told (a direct executor's first record
    /// since the queue was last written).
    fn queue_record(&self, r: TaskRecord) -> bool {
        let mut q = self.records.lock().unwrap_or_else(|e| e.into_inner());
        q.push(r);
        q.len() == 1 && self.direct
    }

    fn count_finished(&self, ok: bool) {
        self.counters.finished.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Transforms the arguments and hands the task to the executor. What must be released
    /// comes back if it failed before it started and was watched; `closed` is its error when the
    /// executor takes no more tasks.
    fn dispatch(
        &self,
        w: Ready,
        executor: &Mutex<Box<dyn Executor>>,
        closed: impl FnOnce() -> TaskError,
    ) -> Option<Released> {
        let seq = w.cell.seq;
        let mut moved = Moved::default();
        let mut args = Vec::with_capacity(w.args.len());
        let mut stored = Vec::new();
        for p in w.args {
            // Values from the caller go through the data layer; parents' results already did.
            let was_ref = matches!(p, Payload::Ref(_));
            let p = match self.data.transform(p, crate::data::Role::Argument, self.wire) {
                Ok(p) => p,
                Err(e) => return self.fail_unstarted(w.cell, &w.parents, w.submit_time, e),
            };
            if let (false, Payload::Ref(r)) = (was_ref, &p) {
                stored.push(r.clone());
            }
            moved += Moved::of(&p);
            args.push(p);
        }
        let (id, def) = (w.cell.id, w.def);
        {
            let mut t = self.table();
            if t.closed {
                drop(t);
                return self.fail_unstarted(w.cell, &w.parents, w.submit_time, closed());
            }
            let r = Running {
                cell: w.cell,
                parents: w.parents,
                submit_time: w.submit_time,
                moved,
                _cells: w.cells,
                pending: w.pending,
                stored,
            };
            t.running.insert(seq, r);
        }
        executor.lock().unwrap_or_else(|e| e.into_inner()).submit(Job { seq, id, def, args });
        None
    }

    /// Records and finishes a task that never ran.
    fn fail_unstarted(
        &self,
        cell: Arc<TaskCell>,
        parents: &[Uuid],
        submit_time: f64,
        err: TaskError,
    ) -> Option<Released> {
        self.push_record(TaskRecord {
            task_id: cell.id.to_string(),
            name: cell.name.to_string(),
            parent_task_ids: parents.iter().map(Uuid::to_string).collect(),
            submit_time,
            received_time: Some(now()),
            success: Some(false),
            exception: Some(err.clone()),
            execution: None,
            worker: None,
            bytes_inline: 0,
            bytes_by_reference: 0,
        });
        self.count_finished(false);
        cell.finish(Err(err.clone())).then(|| (cell, Err(err)))
    }

    /// A completion reported on an executor's thread ([`Executor::direct`]).
    fn complete(&self, c: Completion) {
        let seq = c.seq;
        let r = {
            let mut t = self.table();
            let Some(r) = t.running.remove(&seq) else {
                return; // abandoned after an interrupt
            };
            // A child that went to the executor before its parents finished is recorded after
            // them: the dispatcher holds it until they have.
            if r.pending.iter().any(|p| !p.is_finished()) {
                t.running.insert(seq, r);
                drop(t);
                let _ = self.tx.send(Msg::Done(c));
                return;
            }
            t.settling += 1;
            r
        };
        // One message at most: the dispatcher takes `Released` as news of queued records too.
        match self.settle(r, c) {
            (Some((cell, outcome)), _) => {
                let _ = self.tx.send(Msg::Released(cell, outcome));
            }
            (None, true) => {
                let _ = self.tx.send(Msg::Records);
            }
            (None, false) => {}
        }
        if self.early.load(Ordering::SeqCst) > 0 {
            let _ = self.tx.send(Msg::Settled(seq));
        }
        let mut t = self.table();
        t.settling -= 1;
        if t.draining && t.idle() {
            t.draining = false;
            drop(t);
            let _ = self.tx.send(Msg::Drained);
        }
    }

    /// Records a running task's completion and finishes it; also whether the dispatcher must
    /// be told of the queued record ([`queue_record`](Self::queue_record)).
    fn settle(&self, r: Running, c: Completion) -> (Option<Released>, bool) {
        let received_time = Some(now());
        let mut moved = r.moved;
        let (mut outcome, mut execution, mut worker) = (c.outcome, c.execution, c.worker);
        for p in &r.pending {
            match p.outcome() {
                // The parent's result went to this task inside the executor.
                Some(Ok(v)) => moved += Moved::of(&v),
                // It did not run (the executor failed it for its parent): recorded as a child
                // of a failed parent is, or as interrupted with its parent.
                Some(Err(e)) if !matches!(&outcome, Err(own) if own.kind == ErrorKind::Interrupted) => {
                    outcome = Err(if e.kind == ErrorKind::Interrupted { e } else { parent_failed(&r.cell, p, &e) });
                    (execution, worker) = (None, None);
                    break;
                }
                _ => {}
            }
        }
        if let Ok(p) = &outcome {
            moved += Moved::of(p);
        }
        let tell = self.queue_record(TaskRecord {
            task_id: r.cell.id.to_string(),
            name: r.cell.name.to_string(),
            parent_task_ids: r.parents.iter().map(Uuid::to_string).collect(),
            submit_time: r.submit_time,
            received_time,
            success: Some(outcome.is_ok()),
            exception: outcome.as_ref().err().cloned(),
            execution,
            worker,
            bytes_inline: moved.inline,
            bytes_by_reference: moved.by_reference,
        });
        // No worker reads its arguments again.
        for a in &r.stored {
            self.data.release_argument(a);
        }
        // Whoever waits for the result hears now; the record is serialised later, by the dispatcher.
        self.count_finished(outcome.is_ok());
        let released = if r.cell.finish(outcome.clone()) { Some((r.cell, outcome)) } else { None };
        (released, tell)
    }
}

struct Dispatcher {
    rx: Receiver<Msg>,
    executor: Arc<Mutex<Box<dyn Executor>>>,
    book: Arc<Book>,
    records: RecordWriter,
    waiting: HashMap<u64, Waiting>,
    /// parent seq → (child seq, argument index)
    dependents: HashMap<u64, Vec<(u64, usize)>>,
    /// Completions of tasks that went to the executor before their parents finished and came
    /// back before one of them (by the unfinished parent's seq): handled once it finished.
    early: HashMap<u64, Vec<Completion>>,
    /// No more dispatch: every unfinished task fails as `Interrupted`.
    interrupted: bool,
    /// Interrupted by [`Msg::Interrupt`] (a signal), not by a failed record write.
    signalled: bool,
    /// The first failed record write; it stops the run.
    write_error: Option<String>,
    /// Since when records are queued or buffered but not in the file.
    unflushed_since: Option<Instant>,
    /// Records written since the last flush (the batch that flush wrote: [`FAST_BATCH`]).
    batch: usize,
    /// How long records may wait now ([`FLUSH_AFTER`] or [`FLUSH_AFTER_SLOW`]).
    flush_after: Duration,
    /// A spare record queue (swapped with the shared one).
    queued: Vec<TaskRecord>,
    /// Submissions and completions handled here ([`EngineSummary::through_dispatcher`]).
    handled: u64,
}

/// Records reach the file at the latest this long after they were queued (with a direct
/// executor) or written to the buffer (and, otherwise, as soon as the dispatcher has nothing else
/// to do), while they come fast: the last batch had [`FAST_BATCH`] records or more. They are then
/// written while still in the cache (20 ms batches cost the thread-pool a fifth of its throughput).
const FLUSH_AFTER: Duration = Duration::from_millis(2);

/// How long records wait while they come slowly (fewer than [`FAST_BATCH`] in the last batch).
/// The dispatcher wakes twice per batch (the first record, then the deadline): with tasks a
/// millisecond apart (a Python engine) [`FLUSH_AFTER`] made that a wake-up per task beside the
/// engine's processes on the same cores (Ray at 2 in flight: the driver's CPU per task 89 -> 68 µs
/// with 20 ms). Shutdown and an interrupt write the records at once whatever the deadline.
const FLUSH_AFTER_SLOW: Duration = Duration::from_millis(20);

/// A batch of at least this many records means they come fast (see [`FLUSH_AFTER`]).
const FAST_BATCH: usize = 32;

/// How long the next records may wait after a flush that wrote `batch` of them.
fn flush_after(batch: usize) -> Duration {
    if batch >= FAST_BATCH { FLUSH_AFTER } else { FLUSH_AFTER_SLOW }
}

/// How long an interrupted run waits for running tasks before recording them as interrupted.
const INTERRUPT_GRACE: Duration = Duration::from_millis(500);

impl Dispatcher {
    fn run(mut self) {
        let mut shutdown: Option<Sender<EngineSummary>> = None;
        let mut interrupt_deadline: Option<Instant> = None;
        // Whether the last messages were work (then the next is awaited spinning).
        let mut hot = true;
        loop {
            if let Some(reply) = &shutdown
                && self.waiting.is_empty()
                && self.close_if_idle()
            {
                // Records first: stopping the executor can take seconds (a stopped or lost worker
                // rank), and a launcher may kill this process meanwhile.
                self.flush_records();
                self.executor.lock().unwrap_or_else(|e| e.into_inner()).shutdown(self.interrupted);
                let reply = reply.clone();
                return self.finish(reply);
            }
            let msg = match interrupt_deadline {
                Some(d) if !self.book.table().idle() => {
                    self.flush_records();
                    match self.rx.recv_deadline(d) {
                        Ok(m) => Some(m),
                        Err(_) => {
                            self.abandon_running();
                            None
                        }
                    }
                }
                _ => {
                    let budget = if hot { crate::spin::budget() } else { Duration::ZERO };
                    match crate::spin::until(budget, || self.rx.try_recv().ok()) {
                        Some(m) => Some(m),
                        None => {
                            // Nothing came while spinning: records go to the file before blocking
                            // (a direct executor's once they are due: they come while the
                            // dispatcher has nothing else to do).
                            let due = self.unflushed_since.map(|t| t + self.flush_after);
                            if due.is_some_and(|d| !self.book.direct || d <= Instant::now()) {
                                self.flush_records();
                                if self.write_error.is_some() && !self.interrupted {
                                    self.stop_if_records_fail(&mut interrupt_deadline);
                                }
                                continue;
                            }
                            match due {
                                Some(d) => self.rx.recv_deadline(d).ok(),
                                None => self.rx.recv().ok(),
                            }
                        }
                    }
                }
            };
            let Some(msg) = msg else {
                if shutdown.is_some() || interrupt_deadline.is_some() || self.unflushed_since.is_some() {
                    continue;
                }
                // Every sender is gone: the engine was dropped without shutdown.
                self.flush_records();
                self.executor.lock().unwrap_or_else(|e| e.into_inner()).shutdown(true);
                return;
            };
            hot = false;
            let mut next = Some(msg);
            while let Some(m) = next {
                match m {
                    Msg::Shutdown(reply) => {
                        self.book.table().draining = true;
                        shutdown = Some(reply);
                    }
                    Msg::Interrupt => {
                        self.signalled = true;
                        if !self.interrupted {
                            self.interrupt();
                            interrupt_deadline = Some(Instant::now() + INTERRUPT_GRACE);
                        }
                    }
                    Msg::Records => {
                        self.unflushed_since.get_or_insert_with(Instant::now);
                    }
                    Msg::Drained => {}
                    other => {
                        hot = true;
                        self.handle(other);
                    }
                }
                self.stop_if_records_fail(&mut interrupt_deadline);
                next = self.rx.try_recv().ok();
            }
            if !self.book.direct {
                self.write_queued();
            }
            // Under a steady stream of messages, records still reach the file every flush_after.
            if self.unflushed_since.is_some_and(|t| t.elapsed() >= self.flush_after) {
                self.flush_records();
            }
            self.stop_if_records_fail(&mut interrupt_deadline);
        }
    }

    /// Whether no task is at the executor; then none may go there any more.
    fn close_if_idle(&mut self) -> bool {
        let mut t = self.book.table();
        if !t.idle() {
            t.draining = true;
            return false;
        }
        t.closed = true;
        self.book.closed.store(true, Ordering::Release);
        true
    }

    /// Writes the queued records to the buffer.
    fn write_queued(&mut self) {
        {
            let mut q = self.book.records.lock().unwrap_or_else(|e| e.into_inner());
            if q.is_empty() {
                return;
            }
            std::mem::swap(&mut *q, &mut self.queued);
        }
        let mut queued = std::mem::take(&mut self.queued);
        self.batch += queued.len();
        for r in queued.drain(..) {
            self.write(&r);
        }
        self.queued = queued;
    }

    /// Writes queued and buffered records to the file.
    fn flush_records(&mut self) {
        self.write_queued();
        self.unflushed_since = None;
        self.flush_after = flush_after(self.batch);
        self.batch = 0;
        if let Err(e) = self.records.flush() {
            self.record_error(e);
        }
    }

    /// Keeps the first record write error.
    fn record_error(&mut self, e: std::io::Error) {
        if self.write_error.is_none() {
            let file = self.records.path().map(|p| format!(" to {}", p.display())).unwrap_or_default();
            self.write_error = Some(format!("cannot write task records{}: {}", file, e));
        }
    }

    /// A record that cannot be written stops the run as an interrupt would.
    fn stop_if_records_fail(&mut self, deadline: &mut Option<Instant>) {
        if self.write_error.is_some() && !self.interrupted {
            tracing::error!(target: "taps.run", "{}: stopping the run", self.write_error.as_deref().unwrap_or_default());
            self.interrupt();
            *deadline = Some(Instant::now() + INTERRUPT_GRACE);
        }
    }

    /// How the run was stopped, for the records of the tasks it cut short.
    fn stopped(&self) -> &'static str {
        if self.write_error.is_some() && !self.signalled {
            "the run was stopped (task records cannot be written)"
        } else {
            "the run was interrupted"
        }
    }

    fn finish(mut self, reply: Sender<EngineSummary>) {
        self.flush_records();
        let counters = &self.book.counters;
        let submitted = counters.submitted.load(Ordering::Relaxed);
        let records = self.records.count();
        let mut error = self.write_error.take().map(|e| {
            format!("{}; {} of {} submitted tasks have no record", e, submitted.saturating_sub(records), submitted)
        });
        if let Err(e) = self.book.data.close() {
            error.get_or_insert(format!("cannot clean up the data layer: {}", e));
        }
        let _ = reply.send(EngineSummary {
            submitted,
            records,
            failed: counters.failed.load(Ordering::Relaxed),
            interrupted: self.signalled,
            error,
            through_dispatcher: self.handled,
        });
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Submit(sub) => {
                self.handled += 1;
                self.submit(*sub)
            }
            Msg::Done(c) => {
                self.handled += 1;
                self.done(c)
            }
            Msg::Released(cell, outcome) => {
                self.unflushed_since.get_or_insert_with(Instant::now);
                self.release_children(cell, outcome);
            }
            Msg::Settled(seq) => {
                if let Some(waited) = self.early.remove(&seq) {
                    self.book.early.fetch_sub(waited.len(), Ordering::SeqCst);
                    for c in waited {
                        self.done(c);
                    }
                }
            }
            Msg::Cancel(seq) => {
                if let Some(w) = self.waiting.remove(&seq) {
                    let err = TaskError::new(ErrorKind::Cancelled, "the task was cancelled before it started");
                    self.fail_unstarted(w.sub, w.parents, err);
                }
            }
            Msg::Shutdown(_) | Msg::Interrupt | Msg::Records | Msg::Drained => unreachable!("handled in run"),
        }
    }

    fn submit(&mut self, sub: Submission) {
        if self.interrupted {
            let err = TaskError::new(ErrorKind::Interrupted, format!("{} before this task started", self.stopped()));
            return self.fail_unstarted(sub, Vec::new(), err);
        }
        let seq = sub.cell.seq;
        let mut parents = Vec::new();
        let mut args = Vec::with_capacity(sub.slots.len());
        let mut failed_parent = None;
        let mut cells = Vec::new();
        let mut pending = Vec::new();
        let mut unfinished = Vec::new();
        let Submission { cell, def, slots, submit_time } = sub;
        let sub = Submission { cell, def, slots: Vec::new(), submit_time };
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                Slot::Value(p) => args.push(Some(p)),
                Slot::Future(parent) => {
                    parents.push(parent.id);
                    // An unfinished parent's outcome comes to this thread when it finishes.
                    match parent.outcome_or_watch() {
                        Some(Ok(p)) => args.push(Some(p)),
                        Some(Err(e)) => {
                            failed_parent.get_or_insert((parent.clone(), e));
                            args.push(None);
                        }
                        None => {
                            unfinished.push((parent.seq, i));
                            pending.push(parent.clone());
                            args.push(None);
                        }
                    }
                    cells.push(parent);
                }
            }
        }
        let mut missing = unfinished.len();
        if missing > 0 {
            // An executor that resolves dependencies itself takes the child at once, with a
            // reference to each unfinished parent; otherwise the child waits for them here.
            let refs: Option<Vec<_>> = {
                let ex = self.executor.lock().unwrap_or_else(|e| e.into_inner());
                unfinished.iter().map(|&(p, i)| ex.pending_ref(p).map(|r| (i, r))).collect()
            };
            match refs {
                Some(refs) => {
                    for (i, r) in refs {
                        args[i] = Some(Payload::Ref(r));
                    }
                    missing = 0;
                }
                None => {
                    pending.clear();
                    for (p, i) in unfinished {
                        self.dependents.entry(p).or_default().push((seq, i));
                    }
                }
            }
        }
        let w = Waiting { sub, args, missing, parents, cells, pending };
        if let Some((parent, e)) = failed_parent {
            return self.fail_child(w, &parent, &e);
        }
        if missing == 0 {
            self.dispatch(w);
        } else {
            self.waiting.insert(seq, w);
        }
    }

    fn dispatch(&mut self, w: Waiting) {
        // Only a parent whose result is stored out of band must outlive this task (its release
        // waits for it); an in-process result is in `args`, and holding its cell as well would
        // make a task that could update the value in place copy it (cholesky's tiles).
        let mut cells = w.cells;
        cells.retain(|c| c.stored_out_of_band());
        let r = Ready {
            cell: w.sub.cell,
            def: w.sub.def,
            args: w.args.into_iter().map(|a| a.expect("all arguments resolved")).collect(),
            parents: w.parents,
            submit_time: w.sub.submit_time,
            cells,
            pending: w.pending,
        };
        let stopped = self.stopped();
        let closed = || TaskError::new(ErrorKind::Interrupted, format!("{} before this task started", stopped));
        if let Some((cell, outcome)) = self.book.dispatch(r, &self.executor, closed) {
            self.release_children(cell, outcome);
        }
    }

    fn done(&mut self, c: Completion) {
        let mut next = vec![c];
        while let Some(c) = next.pop() {
            self.done_one(c, &mut next);
        }
    }

    /// Records one completion; completions that waited for this task go to `next`.
    fn done_one(&mut self, c: Completion, next: &mut Vec<Completion>) {
        let r = {
            let mut t = self.book.table();
            let Some(r) = t.running.get(&c.seq) else {
                return; // abandoned after an interrupt, or finished on another thread
            };
            // A child that went to the executor before its parents finished is recorded after
            // them, so that a parent's failure is known. Counted before the look: a parent
            // finishing on another thread meanwhile then says so (`Msg::Settled`).
            self.book.early.fetch_add(1, Ordering::SeqCst);
            if let Some(p) = r.pending.iter().find(|p| !p.is_finished()) {
                self.early.entry(p.seq).or_default().push(c);
                return;
            }
            self.book.early.fetch_sub(1, Ordering::SeqCst);
            t.running.remove(&c.seq).expect("running")
        };
        let seq = r.cell.seq;
        let (released, _) = self.book.settle(r, c);
        self.unflushed_since.get_or_insert_with(Instant::now);
        if let Some((cell, outcome)) = released {
            self.release_children(cell, outcome);
        }
        if let Some(waited) = self.early.remove(&seq) {
            self.book.early.fetch_sub(waited.len(), Ordering::SeqCst);
            next.extend(waited);
        }
    }

    /// Records and finishes a task that never ran.
    fn fail_unstarted(&mut self, sub: Submission, parents: Vec<Uuid>, err: TaskError) {
        if let Some((cell, outcome)) = self.book.fail_unstarted(sub.cell, &parents, sub.submit_time, err) {
            self.release_children(cell, outcome);
        }
    }

    /// Feeds a finished task's outcome to the children waiting for it. The dispatcher's hold on
    /// the parent (`cell`, `outcome`) ends before the children go to the executor: a child that is
    /// then the only holder of an in-process value takes it in place instead of copying it.
    fn release_children(&mut self, cell: Arc<TaskCell>, outcome: Result<Payload, TaskError>) {
        let children = self.dependents.remove(&cell.seq).unwrap_or_default();
        match outcome {
            Ok(p) => {
                drop(cell);
                let mut ready = Vec::new();
                for (child, i) in children {
                    let Some(w) = self.waiting.get_mut(&child) else {
                        continue;
                    };
                    w.args[i] = Some(p.clone());
                    w.missing -= 1;
                    if w.missing == 0 {
                        ready.push(child);
                    }
                }
                drop(p);
                for child in ready {
                    let w = self.waiting.remove(&child).expect("waiting");
                    self.dispatch(w);
                }
            }
            Err(e) => {
                for (child, _) in children {
                    if let Some(w) = self.waiting.remove(&child) {
                        self.fail_child(w, &cell, &e);
                    }
                }
            }
        }
    }

    /// Fails a task without running it because its parent failed with `e`: `ParentFailed`, naming
    /// the parent and wrapping its error; the message names the parent and the failure that
    /// started the chain (so messages do not grow down a chain).
    fn fail_child(&mut self, w: Waiting, parent: &TaskCell, e: &TaskError) {
        let err = parent_failed(&w.sub.cell, parent, e);
        self.fail_unstarted(w.sub, w.parents, err);
    }

    fn write(&mut self, r: &TaskRecord) {
        self.unflushed_since.get_or_insert_with(Instant::now);
        if let Err(e) = self.records.write(r) {
            self.record_error(e);
        }
    }

    fn interrupt(&mut self) {
        self.interrupted = true;
        self.book.interrupted.store(true, Ordering::Release);
        let err = TaskError::new(ErrorKind::Interrupted, format!("{} before this task started", self.stopped()));
        // Every waiting task is interrupted (not failed by its interrupted parent).
        let mut waiting: Vec<Waiting> = self.waiting.drain().map(|(_, w)| w).collect();
        waiting.sort_unstable_by_key(|w| w.sub.cell.seq);
        for w in waiting {
            self.fail_unstarted(w.sub, w.parents, err.clone());
        }
        self.book.table().draining = true;
    }

    /// After the grace period: running tasks are recorded as interrupted.
    fn abandon_running(&mut self) {
        let mut seqs: Vec<u64> = {
            let mut t = self.book.table();
            t.closed = true;
            self.book.closed.store(true, Ordering::Release);
            t.running.keys().copied().collect()
        };
        seqs.sort_unstable();
        let message = format!("{} while this task was running", self.stopped());
        for seq in seqs {
            self.done(Completion {
                seq,
                outcome: Err(TaskError::new(ErrorKind::Interrupted, message.clone())),
                execution: None,
                worker: None,
            });
        }
        // Records first, as at shutdown: stopping the executor may wait on a stopped worker.
        self.flush_records();
        self.executor.lock().unwrap_or_else(|e| e.into_inner()).shutdown(true);
    }
}

/// The error of `child`, which did not run because `parent` failed with `e` (see
/// [`Dispatcher::fail_child`]); notes in `child` the failure that started the chain.
fn parent_failed(child: &TaskCell, parent: &TaskCell, e: &TaskError) -> TaskError {
    let upstream = parent.state.lock().unwrap().origin.clone();
    let (message, origin): (String, Arc<str>) = match upstream {
        Some(o) => (format!("parent task {} ({}) failed because {}", parent.name, parent.id, o), o),
        None => {
            let o = format!("task {} ({}) failed: {}: {}", parent.name, parent.id, e.kind, e.message);
            (format!("parent {}", o), o.into())
        }
    };
    child.state.lock().unwrap().origin = Some(origin);
    let parent = FailedParent { task_id: parent.id, name: parent.name.to_string(), error: e.clone() };
    TaskError::parent_failed(parent, message)
}

/// Whether the current thread is running a task body (panics there are recorded, not printed).
pub fn in_task() -> bool {
    IN_TASK.with(|c| c.get())
}

thread_local! {
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

static HOOK: std::sync::Once = std::sync::Once::new();

/// Installs a panic hook: panics inside tasks are recorded (location kept for the record's
/// traceback), not printed; other panics print one line (the full report with RUST_BACKTRACE set).
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let loc = info.location().map(|l| format!("panicked at {}:{}:{}", l.file(), l.line(), l.column()));
            if in_task() {
                PANIC_AT.with(|p| *p.borrow_mut() = loc);
            } else if std::env::var_os("RUST_BACKTRACE").is_some() {
                prev(info);
            } else {
                let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
                eprintln!(
                    "taps: internal error in thread {}: {} ({})",
                    thread,
                    info.payload_as_str().unwrap_or("panic"),
                    loc.unwrap_or_default()
                );
            }
        }));
    });
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// This host's name.
pub fn hostname() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
        if rc != 0 {
            return "unknown".into();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
}

/// The worker-side wrapper: resolves arguments, runs the task (catching panics), transforms the
/// result, and takes the timestamps of the record's `execution` object.
///
/// With `wire`, the result comes back serialised (or as a reference).
pub fn execute(
    def: &TaskDef,
    args: Vec<Payload>,
    data: &DataLayer,
    wire: bool,
    id: Uuid,
) -> (Result<Payload, TaskError>, ExecutionInfo) {
    install_panic_hook();
    // Adjacent boundaries share one clock reading (a few instructions apart; on a VM a reading
    // costs more than that): the wrapper's entry and the argument resolution's start, the body's
    // end and the result transformation's start, that transformation's end and the wrapper's exit.
    let mut info = ExecutionInfo { hostname: hostname().to_string(), ..Default::default() };
    info.execution_start_time = now();
    info.input_transform_start_time = info.execution_start_time;
    let context = TaskContext::new(id, data.run_dir().cloned());
    let resolved: Result<Vec<Payload>, TaskError> = args.into_iter().map(|p| data.resolve(p)).collect();
    info.input_transform_end_time = now();
    let outcome = resolved.and_then(|args| {
        info.task_start_time = now();
        IN_TASK.with(|c| c.set(true));
        let r = catch_unwind(AssertUnwindSafe(|| crate::task::with_context(Some(context), || (def.call)(args))));
        IN_TASK.with(|c| c.set(false));
        info.task_end_time = now();
        match r {
            Ok(r) => r,
            Err(panic) => {
                let msg = panic_message(&*panic);
                let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
                Err(TaskError::new(ErrorKind::Panic, msg).with_traceback(at))
            }
        }
    });
    info.result_transform_start_time = if info.task_end_time == 0.0 { now() } else { info.task_end_time };
    let outcome = outcome.and_then(|p| data.transform(p, crate::data::Role::Result, wire));
    info.result_transform_end_time = now();
    info.execution_end_time = info.result_transform_end_time;
    if info.task_start_time == 0.0 {
        info.task_start_time = info.input_transform_end_time;
        info.task_end_time = info.input_transform_end_time;
    }
    (outcome, info)
}

/// The engine's own tasks (available in every worker).
pub mod builtin {
    use crate::task::{ErrorKind, Task, TaskError};

    /// `warmup`: does nothing.
    pub struct Warmup;
    impl Task for Warmup {
        const NAME: &'static str = "warmup";
        type Args = ();
        type Output = ();
        fn run(_: ()) -> Result<(), TaskError> {
            Ok(())
        }
    }

    /// `hostname`: the worker's host name.
    pub struct Hostname;
    impl Task for Hostname {
        const NAME: &'static str = "hostname";
        type Args = ();
        type Output = String;
        fn run(_: ()) -> Result<String, TaskError> {
            Ok(super::hostname().to_string())
        }
    }

    /// `sleep`: sleeps the given seconds, returns them.
    pub struct Sleep;
    impl Task for Sleep {
        const NAME: &'static str = "sleep";
        type Args = (f64,);
        type Output = f64;
        fn run((s,): (f64,)) -> Result<f64, TaskError> {
            if s > 0.0 {
                std::thread::sleep(std::time::Duration::from_secs_f64(s));
            }
            Ok(s)
        }
    }

    /// `program`: runs a command line (program and arguments) with
    /// [`TaskCommand`](crate::app::TaskCommand) in the task's own directory; returns its stdout.
    pub struct Program;
    impl Task for Program {
        const NAME: &'static str = "program";
        type Args = (Vec<String>,);
        type Output = String;
        fn run((argv,): (Vec<String>,)) -> Result<String, TaskError> {
            let Some((program, args)) = argv.split_first() else {
                return Err(TaskError::new(ErrorKind::ProgramFailed, "program: empty command line"));
            };
            let out = crate::app::TaskCommand::new(program.as_str()).args(args).run()?;
            Ok(std::fs::read_to_string(out.stdout)?)
        }
    }

    /// `echo`: returns its bytes (a data round trip).
    pub struct Echo;
    impl Task for Echo {
        const NAME: &'static str = "echo";
        type Args = (bytes::Bytes,);
        type Output = bytes::Bytes;
        fn run((b,): (bytes::Bytes,)) -> Result<bytes::Bytes, TaskError> {
            Ok(b)
        }
    }

    /// `fail`: returns an error with the given message.
    pub struct Fail;
    impl Task for Fail {
        const NAME: &'static str = "fail";
        type Args = (String,);
        type Output = ();
        fn run((m,): (String,)) -> Result<(), TaskError> {
            Err(TaskError::new(ErrorKind::Task, m))
        }
    }

    /// `panic`: panics with the given message.
    pub struct Panic;
    impl Task for Panic {
        const NAME: &'static str = "panic";
        type Args = (String,);
        type Output = ();
        fn run((m,): (String,)) -> Result<(), TaskError> {
            panic!("{}", m)
        }
    }

    /// `context`: the task's id and run directory as the task sees them ([`crate::task::context`]),
    /// wherever it runs; the run directory is empty if the engine has none.
    pub struct Context;
    impl Task for Context {
        const NAME: &'static str = "context";
        type Args = ();
        type Output = (String, String);
        fn run(_: ()) -> Result<(String, String), TaskError> {
            let c = crate::task::context().ok_or_else(|| TaskError::new(ErrorKind::Task, "no task context"))?;
            let dir = c.run_dir().map(|d| d.display().to_string()).unwrap_or_default();
            Ok((c.task_id().to_string(), dir))
        }
    }

    /// `abort`: ends the worker process abruptly (tests of lost workers; never on thread-pool).
    pub struct Abort;
    impl Task for Abort {
        const NAME: &'static str = "abort";
        type Args = ();
        type Output = ();
        fn run(_: ()) -> Result<(), TaskError> {
            std::process::abort()
        }
    }
}

crate::task_arg!(bytes::Bytes);

/// Registers the engine's own tasks.
pub fn register_builtin_tasks(r: &mut Registry) {
    r.add::<builtin::Warmup>()
        .add::<builtin::Hostname>()
        .add::<builtin::Sleep>()
        .add::<builtin::Program>()
        .add::<builtin::Echo>()
        .add::<builtin::Fail>()
        .add::<builtin::Panic>()
        .add::<builtin::Context>()
        .add::<builtin::Abort>();
}

/// Whether any engine of this process was interrupted (set by the signal handler).
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl HeldValues for Echo {
        fn fetch(&self, key: &str) -> Result<Payload, TaskError> {
            Ok(Payload::Bytes(crate::task::encode(&key.to_string())?.into()))
        }
    }

    /// Records that come fast (a pool's hundreds per batch) are written every 2 ms, while still
    /// in the cache; a batch of fewer than 32 (a Python engine's: a task a millisecond) lets the
    /// next wait 20 ms, so the dispatcher does not wake for every task.
    #[test]
    fn records_wait_longer_only_while_they_come_slowly() {
        assert_eq!(flush_after(0), FLUSH_AFTER_SLOW);
        assert_eq!(flush_after(FAST_BATCH - 1), FLUSH_AFTER_SLOW);
        assert_eq!(flush_after(FAST_BATCH), FLUSH_AFTER);
        assert_eq!(flush_after(600), FLUSH_AFTER);
        assert!(FLUSH_AFTER < FLUSH_AFTER_SLOW);
    }

    #[test]
    fn held_results_are_fetched_from_their_holder_while_it_is_registered() {
        let id = register_held(Arc::new(Echo));
        let r = held_ref(id, "noop-1:x", 9);
        assert_eq!(held_key(&r), Some((id, "noop-1:x")));
        assert_eq!(held_key(&crate::task::DataRef { key: "/tmp/file".into(), size: 1 }), None);
        let p = fetch_held(Payload::Ref(r.clone())).unwrap();
        assert_eq!(p.decode::<String>().unwrap(), "noop-1:x");
        release_held(id);
        let e = fetch_held(Payload::Ref(r)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnresolvedReference);
        assert!(e.message.contains("shut down"), "{}", e.message);
    }

    /// A child of `()`.
    struct After;
    impl Task for After {
        const NAME: &'static str = "test-after";
        type Args = ((),);
        type Output = ();
        fn run(_: ((),)) -> Result<(), TaskError> {
            Ok(())
        }
    }

    /// An executor that resolves dependencies itself and reports a child before its parent,
    /// as an engine's callbacks may: the second job's completion comes first. (No real engine
    /// does this on demand; the order of the reports is what this test is about.)
    struct Reversed {
        done: Option<Completer>,
        jobs: Vec<u64>,
        child_ok: bool,
        /// A [direct](Executor::direct) executor (as the engines' bridge is).
        direct: bool,
        /// The reports come from another thread, the parent's 50 ms after the child's (so that
        /// the dispatcher holds the child's when the parent's comes).
        later: bool,
    }

    impl Executor for Reversed {
        fn start(&mut self, done: Completer, _: Arc<DataLayer>) -> anyhow::Result<()> {
            self.done = Some(done);
            Ok(())
        }
        fn needs_wire(&self) -> bool {
            false
        }
        fn submit(&mut self, job: Job) {
            self.jobs.push(job.seq);
            if let [parent, child] = self.jobs[..] {
                let done = self.done.as_ref().unwrap();
                let outcome = |ok| if ok { Ok(Payload::local(())) } else { Err(TaskError::new("EngineError", "x")) };
                let c = |seq, outcome| Completion { seq, outcome, execution: None, worker: None };
                let (first, second) = (c(child, outcome(self.child_ok)), c(parent, outcome(self.child_ok)));
                if self.later {
                    let done = done.clone();
                    std::thread::spawn(move || {
                        done.complete(first);
                        std::thread::sleep(Duration::from_millis(50));
                        done.complete(second);
                    });
                } else {
                    done.complete(first);
                    done.complete(second);
                }
            }
        }
        fn direct(&self) -> bool {
            self.direct
        }
        fn shutdown(&mut self, _: bool) {}
        fn describe(&self) -> String {
            "reversed".into()
        }
        fn pending_ref(&self, seq: u64) -> Option<crate::task::DataRef> {
            Some(crate::task::DataRef { key: format!("pending-{}", seq), size: 0 })
        }
    }

    #[test]
    fn a_child_sent_before_its_parent_finished_is_recorded_after_it_and_fails_as_its_child() {
        let cases = [false, true].into_iter().flat_map(|d| [false, true].map(|l| (d, l)));
        for ((direct, later), ok) in cases.flat_map(|c| [true, false].map(|ok| (c, ok))) {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("tasks.jsonl");
            let executor = Reversed { done: None, jobs: Vec::new(), child_ok: ok, direct, later };
            let e = Engine::builder(Box::new(executor)).records(RecordWriter::create(&path).unwrap()).build();
            let parent = e.submit::<builtin::Warmup>(());
            let child = e.submit::<After>(((&parent).into(),));
            // A child held for a parent that finished on another thread must not wait for ever.
            let (tx, rx) = crossbeam_channel::bounded(1);
            let c = child.clone();
            std::thread::spawn(move || tx.send(c.result().is_ok()));
            let got = rx.recv_timeout(Duration::from_secs(60));
            assert_eq!(
                got,
                Ok(ok),
                "direct {}, later {}: the child's outcome (a timeout: it never came)",
                direct,
                later
            );
            let summary = e.shutdown();
            assert_eq!((summary.records, summary.failed), (2, if ok { 0 } else { 2 }));
            let recs = crate::record::read_records(&path).unwrap();
            assert_eq!(recs[0].task_id, parent.task_id().to_string(), "the parent's record comes first");
            assert_eq!(recs[1].parent_task_ids, vec![parent.task_id().to_string()]);
            if !ok {
                let err = child.exception().unwrap();
                assert_eq!(err.kind, ErrorKind::ParentFailed);
                assert!(err.message.contains(&parent.task_id().to_string()), "{}", err.message);
                assert_eq!(err.cause().unwrap().kind, "EngineError");
                assert!(recs[1].execution.is_none());
            }
        }
    }
}
