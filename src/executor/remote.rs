//! The remote-worker core: what every out-of-process executor does with its workers, written
//! once over a small [`Transport`].
//!
//! [`RemoteExecutor`] keeps the queue of jobs not yet sent, sends up to `prefetch` of them ahead
//! to each ready worker (least loaded first), tracks what each worker holds, and handles the
//! loss of a worker: its running task fails with a `WorkerLost` error naming it, the tasks queued
//! behind it go to the other workers (or, when the transport says a loss ends the whole job,
//! every unfinished task fails at once), and the transport is asked to start a replacement. A
//! watchdog thread loses a worker that holds a task but has not been heard of for
//! `heartbeat_timeout` (stopped or hung). When no worker is left, every remaining task fails.
//!
//! The transport moves [`protocol`](crate::protocol) frames and reports what happens through a
//! [`Link`]: a worker started, became ready, finished a task, failed, or is gone. A new
//! out-of-process executor is a transport plus its options:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use taps::executor::remote::{Link, RemoteExecutor, RemoteOptions, Transport};
//! use taps::protocol::{Frame, Message, ToWorker, FromWorker};
//!
//! /// Runs each task "remotely" on a thread of this process, through the worker state machine.
//! struct Threads(Mutex<Option<Link>>);
//!
//! impl Transport for Threads {
//!     fn slots(&self) -> usize { 1 }
//!     fn start(&self, link: Link) -> anyhow::Result<()> {
//!         link.started(0, 0);
//!         link.ready(0, 0, "thread-0".into());
//!         *self.0.lock().unwrap() = Some(link);
//!         Ok(())
//!     }
//!     fn send(&self, slot: usize, frame: Frame) {
//!         let link = self.0.lock().unwrap().clone().unwrap();
//!         std::thread::spawn(move || {
//!             let mut w = taps::worker::Worker::new();
//!             w.handle(ToWorker::Hello {
//!                 version: taps::protocol::PROTOCOL_VERSION, data: Default::default(), name: "t".into(),
//!             });
//!             if let taps::worker::Step::Continue(Some(reply)) = w.handle(ToWorker::decode(frame).unwrap()) {
//!                 link.message(slot, 0, reply);
//!             }
//!         });
//!     }
//!     fn describe(&self, slot: usize) -> String { format!("thread {}", slot) }
//!     fn stop(&self, _cancel: bool, _alive: &[bool]) {}
//! }
//!
//! use taps::engine::{Engine, builtin::Sleep};
//! let ex = RemoteExecutor::new(Arc::new(Threads(Mutex::new(None))), RemoteOptions::new("threads"));
//! let engine = Engine::builder(Box::new(ex)).build();
//! assert_eq!(engine.submit::<Sleep>((0.0.into(),)).result().unwrap(), 0.0);
//! engine.shutdown();
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::data::{DataLayer, DataSpec};
use crate::engine::{Completer, Completion, Executor, Job};
use crate::protocol::{Frame, FromWorker, Message, PROTOCOL_VERSION, ToWorker, WirePayload};
use crate::record::ExecutionInfo;
use crate::task::TaskError;

/// How an executor moves frames to and from its workers. Every method may be called from any
/// thread; [`send`](Transport::send) is called with the core's lock held, so it must not block
/// for long nor call back into the [`Link`] (report a failure later, from another thread).
pub trait Transport: Send + Sync + 'static {
    /// Number of worker slots (fixed for the run).
    fn slots(&self) -> usize;
    /// Starts the workers (or finds them); they report through `link`, starting with
    /// [`Link::started`]. Called once, before anything else.
    fn start(&self, link: Link) -> anyhow::Result<()>;
    /// Sends a frame to the current worker of `slot`, in order. A failure shows up as that
    /// worker's loss, reported through the link.
    fn send(&self, slot: usize, frame: Frame);
    /// Who the current worker of `slot` is, for messages (e.g. `worker pid 12`).
    fn describe(&self, slot: usize) -> String;
    /// When the worker of `slot` last showed a sign of life (a heartbeat); `None` if it is not
    /// watched (then it is never lost to silence).
    fn heard(&self, _slot: usize) -> Option<Instant> {
        None
    }
    /// Stops the worker of `slot`, which went silent (its loss is handled next); whether it
    /// could (a process is killed; an MPI rank cannot be).
    fn kill(&self, _slot: usize) -> bool {
        false
    }
    /// Starts a new worker in `slot` (after a loss or a failed start); whether the transport can.
    fn replace(&self, _slot: usize) -> bool {
        false
    }
    /// Ends the run's workers: `alive[slot]` says which still have one. With `cancel`, running
    /// tasks are not awaited. Called once, without the core's lock; every report after it is
    /// ignored.
    fn stop(&self, cancel: bool, alive: &[bool]);
}

/// What the core needs to know besides the transport.
#[derive(Clone)]
pub struct RemoteOptions {
    /// Executor name, for logs and errors.
    pub name: &'static str,
    /// Tasks sent ahead to each worker (the running one included).
    pub prefetch: usize,
    /// A worker holding a task that is not heard of for this long is lost.
    pub heartbeat_timeout: Duration,
    /// How long [`Executor::start`] waits for every worker's `Ready`.
    pub start_timeout: Duration,
    /// A slot whose worker fails to start this many times in a row is given up.
    pub max_start_failures: u32,
    /// When set, the loss of a worker ends the whole job (the launcher kills it): every
    /// unfinished task fails at once; the text says why.
    pub loss_ends_job: Option<String>,
    /// Descriptions of the workers lost during the run (start-up included) are appended here.
    pub losses: Arc<Mutex<Vec<String>>>,
}

impl RemoteOptions {
    /// Defaults: prefetch 2, heartbeat timeout 60 s, start timeout 60 s, 3 start attempts.
    pub fn new(name: &'static str) -> Self {
        RemoteOptions {
            name,
            prefetch: 2,
            heartbeat_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(60),
            max_start_failures: 3,
            loss_ends_job: None,
            losses: Arc::default(),
        }
    }
}

/// How often workers send heartbeats (and the watchdog looks) for a given timeout.
pub(crate) fn heartbeat_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5))
}

/// A job in wire form (kept until its `Done`, to be re-sent if its worker is lost before starting it).
struct Pending {
    seq: u64,
    id: uuid::Uuid,
    task: &'static str,
    args: Vec<WirePayload>,
}

impl Pending {
    fn frame(&self) -> Frame {
        ToWorker::Run { seq: self.seq, id: self.id, task: self.task.to_string(), args: self.args.clone() }.encode()
    }
}

#[derive(Default)]
struct Slot {
    /// The transport's id of the current worker (None: no worker).
    id: Option<u64>,
    ready: bool,
    /// Label of completions (e.g. `pid-12`).
    label: String,
    /// Jobs sent, in order; the first is running.
    in_flight: VecDeque<Pending>,
    /// When it last went from idle to holding a task, or finished one.
    busy_since: Option<Instant>,
    /// The worker's own explanation, if it sent `Failed`.
    failed: Option<String>,
    /// Consecutive start failures, and why the last one failed.
    failures: u32,
    last_error: Option<String>,
    /// Given up: no worker will run here again.
    retired: bool,
}

struct Core {
    queue: VecDeque<Pending>,
    slots: Vec<Slot>,
    /// Every slot was given up (or the transport broke): jobs fail at once with this error.
    broken: Option<TaskError>,
    /// Shutdown has begun: reports are ignored.
    closing: bool,
    interrupted: bool,
    /// Start-up is over (successfully or not).
    started: bool,
    /// Why start-up failed.
    start_error: Option<String>,
}

/// Failures to report once the lock is released.
type Failed = Vec<(u64, TaskError, Option<String>)>;

struct Shared {
    core: Mutex<Core>,
    cv: Condvar,
    done: Completer,
    transport: Arc<dyn Transport>,
    opts: RemoteOptions,
    spec: DataSpec,
}

/// The transport's handle on the core: how it reports what its workers do. Reports about a
/// worker carry its slot and the id the transport gave it in [`Link::started`]; reports about a
/// worker that is no longer the slot's current one are ignored.
#[derive(Clone)]
pub struct Link(Weak<Shared>);

impl Link {
    fn with(&self, f: impl FnOnce(&Shared, &mut Core) -> Failed) {
        let Some(sh) = self.0.upgrade() else { return };
        let failed = {
            let mut core = sh.lock();
            if core.closing {
                return;
            }
            let failed = f(&sh, &mut core);
            sh.cv.notify_all();
            failed
        };
        sh.complete_all(failed);
    }

    /// The protocol's `Hello` for a worker (its first frame): the data layer's spec and a name.
    pub fn hello(&self, name: String) -> Frame {
        let data = self.0.upgrade().map(|s| s.spec.clone()).unwrap_or_default();
        ToWorker::Hello { version: PROTOCOL_VERSION, data, name }.encode()
    }

    /// A new worker (id `id`) runs in `slot`; it is not ready yet.
    pub fn started(&self, slot: usize, id: u64) {
        self.with(|_, core| {
            let s = &mut core.slots[slot];
            s.id = Some(id);
            s.ready = false;
            s.failed = None;
            Vec::new()
        });
    }

    /// The worker of `slot` is ready for tasks; its completions are labelled `label`.
    pub fn ready(&self, slot: usize, id: u64, label: String) {
        self.with(|sh, core| {
            let s = &mut core.slots[slot];
            if s.id != Some(id) {
                return Vec::new();
            }
            s.ready = true;
            s.label = label;
            s.failures = 0;
            sh.check_started(core);
            sh.pump(core);
            Vec::new()
        });
    }

    /// Hands a worker's message to the core (`Ready` is labelled `pid-PID`).
    pub fn message(&self, slot: usize, id: u64, m: FromWorker) {
        match m {
            FromWorker::Ready { pid, .. } => self.ready(slot, id, format!("pid-{}", pid)),
            FromWorker::Failed { message } => self.failed(slot, id, message),
            FromWorker::Done { seq, outcome, execution } => self.done(slot, id, seq, outcome, execution),
        }
    }

    /// The worker of `slot` cannot serve (it sent `Failed`); its loss follows.
    pub fn failed(&self, slot: usize, id: u64, message: String) {
        self.with(|_, core| {
            if core.slots[slot].id == Some(id) {
                core.slots[slot].failed = Some(message);
            }
            Vec::new()
        });
    }

    /// The worker of `slot` finished task `seq`.
    pub fn done(
        &self,
        slot: usize,
        id: u64,
        seq: u64,
        outcome: Result<WirePayload, TaskError>,
        execution: ExecutionInfo,
    ) {
        let Some(sh) = self.0.upgrade() else { return };
        let label = {
            let mut core = sh.lock();
            if core.closing {
                return;
            }
            let s = &mut core.slots[slot];
            if s.id != Some(id) {
                return;
            }
            let held = s.in_flight.len();
            match s.in_flight.front() {
                Some(p) if p.seq == seq => drop(s.in_flight.pop_front()),
                _ => s.in_flight.retain(|p| p.seq != seq),
            }
            if s.in_flight.len() == held {
                // Not held here (already failed, e.g. by an interrupt): nothing to report.
                return;
            }
            s.busy_since = Some(Instant::now());
            let label = s.label.clone();
            sh.pump(&mut core);
            label
        };
        sh.done.complete(Completion {
            seq,
            outcome: outcome.map(Into::into),
            execution: Some(execution),
            worker: Some(label),
        });
    }

    /// The worker of `slot` is gone; `why` says how (e.g. `worker pid 12 died (signal 9,
    /// SIGKILL)`). Its running task fails, the rest are re-queued, and a replacement is asked
    /// for; a worker lost before it was ready counts as a failed start.
    pub fn lost(&self, slot: usize, id: u64, why: String) {
        self.with(|sh, core| {
            // After an interrupt every task is recorded; workers ending is no news.
            if core.slots[slot].id != Some(id) || core.interrupted {
                return Vec::new();
            }
            sh.lose(core, slot, why, None)
        });
    }

    /// A worker could not be started in `slot`.
    pub(crate) fn start_failed(&self, slot: usize, why: String) {
        self.with(|sh, core| {
            core.slots[slot].id = None;
            sh.start_failed(core, slot, why)
        });
    }

    /// The transport itself failed: every unfinished task fails with `why`, and so does every
    /// later one.
    pub(crate) fn broke(&self, why: String) {
        self.with(|sh, core| {
            if core.broken.is_some() {
                return Vec::new();
            }
            tracing::error!(target: "taps.run", "{}: {}", sh.opts.name, why);
            let e = TaskError::new("WorkerLost", why.clone());
            core.broken = Some(e.clone());
            if !core.started {
                core.start_error = Some(why);
            }
            core.take_all().into_iter().map(|(seq, _)| (seq, e.clone(), None)).collect()
        });
    }

    /// Fails every task the executor holds at once as interrupted, and every later one.
    pub fn interrupt(&self) {
        self.with(|_, core| {
            if core.interrupted {
                return Vec::new();
            }
            core.interrupted = true;
            let mut failed = Vec::new();
            for s in &mut core.slots {
                for (i, p) in s.in_flight.drain(..).enumerate() {
                    failed.push((p.seq, interrupted_error(i == 0), None));
                }
            }
            failed.extend(core.queue.drain(..).map(|p| (p.seq, interrupted_error(false), None)));
            failed
        });
    }
}

impl Core {
    /// Every job held (queued or in flight), with whether it was running.
    fn take_all(&mut self) -> Vec<(u64, bool)> {
        let mut all: Vec<(u64, bool)> = Vec::new();
        for s in &mut self.slots {
            all.extend(s.in_flight.drain(..).enumerate().map(|(i, p)| (p.seq, i == 0)));
        }
        all.extend(self.queue.drain(..).map(|p| (p.seq, false)));
        all
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn complete_all(&self, failed: Failed) {
        for (seq, e, worker) in failed {
            self.done.complete(Completion { seq, outcome: Err(e), execution: None, worker });
        }
    }

    /// Sends queued jobs to ready workers with room, least loaded first.
    fn pump(&self, core: &mut Core) {
        let prefetch = self.opts.prefetch;
        while !core.queue.is_empty() {
            let Some((slot, s)) = core
                .slots
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| s.ready && s.in_flight.len() < prefetch)
                .min_by_key(|(_, s)| s.in_flight.len())
            else {
                return;
            };
            let job = core.queue.pop_front().unwrap();
            if s.in_flight.is_empty() {
                s.busy_since = Some(Instant::now());
            }
            let frame = job.frame();
            s.in_flight.push_back(job);
            self.transport.send(slot, frame);
        }
    }

    /// Start-up is over once every slot is ready, or as soon as one is given up.
    fn check_started(&self, core: &mut Core) {
        if core.started {
            return;
        }
        if let Some(s) = core.slots.iter().find(|s| s.retired) {
            core.start_error = Some(s.last_error.clone().unwrap_or_else(|| "unknown error".into()));
            core.started = true;
        } else if core.slots.iter().all(|s| s.ready) {
            core.started = true;
        }
    }

    /// Loses the worker of `slot`; `why` describes the loss, `task` (default: `why` + " while
    /// running this task") is the error message of its running task.
    fn lose(&self, core: &mut Core, slot: usize, why: String, task: Option<String>) -> Failed {
        let t = &self.transport;
        let s = &mut core.slots[slot];
        s.id = None;
        let was_ready = std::mem::take(&mut s.ready);
        let mut in_flight = std::mem::take(&mut s.in_flight);
        let mut failed = Vec::new();
        self.opts.losses.lock().unwrap().push(why.clone());
        if !was_ready {
            // It never started: nothing ran on it.
            let why = s.failed.take().unwrap_or_else(|| format!("{} during start-up", why));
            failed = self.start_failed(core, slot, why);
        } else {
            let replace = core.broken.is_none() && self.opts.loss_ends_job.is_none() && t.replace(slot);
            if let Some(end) = &self.opts.loss_ends_job {
                tracing::error!(target: "taps.run", "{}; {}, so every unfinished task is recorded as failed (WorkerLost)", why, end);
            } else if replace {
                tracing::warn!("{}: {}; starting a replacement", self.opts.name, why);
            } else {
                tracing::error!(target: "taps.run", "{}; its running task is recorded as failed (WorkerLost), its queued tasks go to the other workers", why);
            }
            if let Some(p) = in_flight.pop_front() {
                let msg = task.unwrap_or_else(|| format!("{} while running this task", why));
                let e = TaskError::new("WorkerLost", msg);
                failed.push((p.seq, e, Some(core.slots[slot].label.clone())));
            }
            if !replace {
                core.slots[slot].retired = true;
            }
        }
        // Tasks sent but not started go back to the front of the queue, in order.
        while let Some(p) = in_flight.pop_back() {
            core.queue.push_front(p);
        }
        if let Some(end) = &self.opts.loss_ends_job
            && was_ready
        {
            let e = TaskError::new("WorkerLost", format!("{}, and {}", why, end));
            core.broken = Some(e.clone());
            failed.extend(core.take_all().into_iter().map(|(seq, _)| (seq, e.clone(), None)));
        }
        if core.broken.is_none() && core.slots.iter().all(|s| s.retired) {
            let lost = self.opts.losses.lock().unwrap().join("; ");
            let last = core.slots[slot].last_error.clone().unwrap_or_default();
            let e = TaskError::new(
                "WorkerLost",
                if was_ready {
                    format!("no {} worker is left ({})", self.opts.name, lost)
                } else {
                    format!("no {} worker could be started: {}", self.opts.name, last)
                },
            );
            core.broken = Some(e.clone());
            failed.extend(core.take_all().into_iter().map(|(seq, _)| (seq, e.clone(), None)));
        }
        self.check_started(core);
        self.pump(core);
        failed
    }

    /// Records a failed start of `slot`; asks for another try or gives the slot up.
    fn start_failed(&self, core: &mut Core, slot: usize, why: String) -> Failed {
        let s = &mut core.slots[slot];
        s.failures += 1;
        s.last_error = Some(why.clone());
        tracing::warn!("{}: a worker failed to start: {}", self.opts.name, why);
        if s.failures < self.opts.max_start_failures && self.transport.replace(slot) {
            return Vec::new();
        }
        s.retired = true;
        self.check_started(core);
        if core.broken.is_some() || !core.slots.iter().all(|s| s.retired) {
            return Vec::new();
        }
        let e = TaskError::new("WorkerLost", format!("no {} worker could be started: {}", self.opts.name, why));
        core.broken = Some(e.clone());
        core.take_all().into_iter().map(|(seq, _)| (seq, e.clone(), None)).collect()
    }

    /// Loses every worker that holds a task and was not heard of for the heartbeat timeout.
    fn check_heartbeats(&self, core: &mut Core) -> Failed {
        let timeout = self.opts.heartbeat_timeout;
        let mut failed = Vec::new();
        for slot in 0..core.slots.len() {
            let s = &core.slots[slot];
            if !s.ready || s.in_flight.is_empty() {
                continue;
            }
            let Some(heard) = self.transport.heard(slot) else { continue };
            let quiet = s.busy_since.map_or(heard, |b| b.max(heard)).elapsed();
            if quiet < timeout {
                continue;
            }
            let (who, quiet) = (self.transport.describe(slot), quiet.as_secs_f64());
            let why = format!(
                "{} sent no heartbeat for {:.1} s while it held a task (stopped or hung; \
                 engine.executor.heartbeat_timeout = {} s)",
                who,
                quiet,
                timeout.as_secs_f64()
            );
            let killed = if self.transport.kill(slot) { " and was killed" } else { "" };
            let task = format!(
                "{} sent no heartbeat for {:.1} s while running this task (stopped or hung){}",
                who, quiet, killed
            );
            failed.extend(self.lose(core, slot, why, Some(task)));
        }
        failed
    }
}

/// Watches the heartbeats until shutdown.
fn watchdog(sh: Arc<Shared>) {
    let tick = heartbeat_interval(sh.opts.heartbeat_timeout).min(Duration::from_millis(100));
    let mut core = sh.lock();
    while !core.closing {
        core = sh.cv.wait_timeout(core, tick).unwrap_or_else(|e| e.into_inner()).0;
        if core.closing || core.interrupted {
            continue;
        }
        let failed = sh.check_heartbeats(&mut core);
        if !failed.is_empty() {
            drop(core);
            sh.complete_all(failed);
            core = sh.lock();
        }
    }
}

/// The error of a task failed by an interrupt (the engine's wording).
fn interrupted_error(running: bool) -> TaskError {
    TaskError::new(
        "Interrupted",
        if running {
            "the run was interrupted while this task was running"
        } else {
            "the run was interrupted before this task started"
        },
    )
}

/// An [`Executor`] over a [`Transport`].
pub struct RemoteExecutor {
    transport: Arc<dyn Transport>,
    opts: RemoteOptions,
    shared: Option<Arc<Shared>>,
    watchdog: Option<JoinHandle<()>>,
}

impl RemoteExecutor {
    /// An executor whose workers are reached through `transport`.
    pub fn new(transport: Arc<dyn Transport>, opts: RemoteOptions) -> Self {
        let opts = RemoteOptions { prefetch: opts.prefetch.max(1), ..opts };
        RemoteExecutor { transport, opts, shared: None, watchdog: None }
    }

    /// The options.
    pub fn options(&self) -> &RemoteOptions {
        &self.opts
    }
}

impl Executor for RemoteExecutor {
    fn start(&mut self, done: Completer, data: Arc<DataLayer>) -> anyhow::Result<()> {
        let n = self.transport.slots();
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                queue: VecDeque::new(),
                slots: (0..n).map(|_| Slot::default()).collect(),
                broken: None,
                closing: false,
                interrupted: false,
                started: n == 0,
                start_error: None,
            }),
            cv: Condvar::new(),
            done,
            transport: self.transport.clone(),
            opts: self.opts.clone(),
            spec: data.spec().clone(),
        });
        self.shared = Some(shared.clone());
        if let Err(e) = self.transport.start(Link(Arc::downgrade(&shared))) {
            self.shutdown(true);
            return Err(e);
        }
        let s = shared.clone();
        self.watchdog = Some(
            std::thread::Builder::new().name(format!("taps-{}-watchdog", self.opts.name)).spawn(move || watchdog(s))?,
        );
        // Wait until every worker said Ready (or a slot was given up).
        let deadline = Instant::now() + self.opts.start_timeout;
        let mut core = shared.lock();
        while !core.started {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let missing: Vec<String> =
                    (0..n).filter(|&i| !core.slots[i].ready).map(|i| self.transport.describe(i)).collect();
                core.start_error = Some(format!(
                    "{} did not answer within {} s",
                    missing.join(", "),
                    self.opts.start_timeout.as_secs()
                ));
                break;
            }
            core = shared.cv.wait_timeout(core, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        if let Some(e) = core.start_error.clone() {
            drop(core);
            self.shutdown(true);
            anyhow::bail!("{}", e);
        }
        Ok(())
    }

    fn needs_wire(&self) -> bool {
        true
    }

    fn submit(&mut self, job: Job) {
        let Some(sh) = &self.shared else { return };
        let args: Result<Vec<WirePayload>, TaskError> = job.args.into_iter().map(WirePayload::from_payload).collect();
        let failed = {
            let mut core = sh.lock();
            let e = match args {
                Err(e) => Some(e),
                Ok(_) if core.interrupted => Some(interrupted_error(false)),
                Ok(_) if core.closing => {
                    Some(TaskError::new("WorkerLost", format!("the {} executor is shutting down", self.opts.name)))
                }
                Ok(_) if core.broken.is_some() => core.broken.clone(),
                Ok(args) => {
                    core.queue.push_back(Pending { seq: job.seq, id: job.id, task: job.def.name, args });
                    sh.pump(&mut core);
                    None
                }
            };
            e.map(|e| vec![(job.seq, e, None)]).unwrap_or_default()
        };
        sh.complete_all(failed);
    }

    fn shutdown(&mut self, cancel: bool) {
        let Some(sh) = self.shared.take() else { return };
        let alive: Vec<bool> = {
            let mut core = sh.lock();
            core.closing = true;
            core.queue.clear();
            sh.cv.notify_all();
            core.slots.iter().map(|s| s.id.is_some()).collect()
        };
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        self.transport.stop(cancel, &alive);
    }

    fn describe(&self) -> String {
        format!("{}(workers={}, prefetch={})", self.opts.name, self.transport.slots(), self.opts.prefetch)
    }

    /// Submitting queues the job under the core's lock; completions come from the transport's threads.
    fn direct(&self) -> bool {
        true
    }
}

impl Drop for RemoteExecutor {
    fn drop(&mut self) {
        self.shutdown(true);
    }
}
