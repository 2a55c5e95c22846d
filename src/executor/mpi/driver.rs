//! Rank 0's executor: one communication thread makes every MPI call, fed by a channel from the
//! engine (jobs, shutdown) and from the liveness watcher (a rank's process ended).
//!
//! Up to `prefetch` tasks are sent ahead to each worker rank, least loaded first, so a rank
//! finds its next task waiting when it finishes one. The thread spins for `SPIN` (1 ms) after the
//! last thing that happened (yielding the CPU now and then), keeps spinning while a message is
//! under way, then backs off to sleeping up to `MAX_PAUSE` (1 ms) while answers are due, and blocks on
//! its channel when nothing is outstanding at all.
//!
//! A rank whose process ends fails its running task with `WorkerLost` naming the rank, pid and
//! host; the tasks queued behind it go to the other ranks (a dead MPI rank cannot be replaced).
//! So does a rank that sends no heartbeat for `heartbeat_timeout` while it holds a task (stopped
//! or hung). When no rank is left, every remaining task fails at once.
//!
//! [`interrupt`] (rank 0's signal handler) fails every task the executor holds at once, as
//! interrupted: under mpirun, rank 0 hears of a Ctrl-C only through the SIGTERM that comes one
//! second before SIGKILL, so it cannot wait for running tasks.
//!
//! At the end of a run, rank 0 tells every rank `Shutdown` and waits until each has closed its
//! liveness connection (it does so on `Shutdown`) before closing its own side: a rank never
//! takes rank 0's close for its death while the `Shutdown` is still on its way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded, unbounded};

use crate::data::{DataLayer, DataSpec};
use crate::engine::{Completer, Completion, Executor, Job};
use crate::protocol::{FromWorker, Message, PROTOCOL_VERSION, ToWorker, WirePayload};
use crate::task::TaskError;

use super::liveness::{Beats, Event, Watcher};
use super::transport::{Inbox, Sending, TAG_LOST, TAG_WATCH, send_frame, send_text};

/// How long start-up waits for every rank's `Ready`.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// After every rank is ready, how long to wait for liveness connections still on their way.
const WATCH_GRACE: Duration = Duration::from_secs(5);
/// Spin this long after the last progress before sleeping.
const SPIN: Duration = Duration::from_millis(1);
/// While spinning, yield the CPU every this many polls.
const YIELD_EVERY: u32 = 16;
/// Spin this long while a message is under way.
const TRANSFER_SPIN: Duration = Duration::from_millis(20);
/// Longest sleep between polls while answers are due.
const MAX_PAUSE: Duration = Duration::from_millis(1);
/// How often heartbeats are checked.
const BEAT_CHECK: Duration = Duration::from_millis(100);
/// At the end of a run, how long to wait for every rank to take its `Shutdown`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// At the end of an interrupted run, how long to wait for the ranks to take their `Shutdown`
/// (a rank in the middle of a task takes it only afterwards).
const CANCEL_TIMEOUT: Duration = Duration::from_millis(300);

/// The running executor's channel, for [`interrupt`].
static ACTIVE: Mutex<Option<Sender<Cmd>>> = Mutex::new(None);
/// Whether a rank was lost to silence: its process may still be there, so only ending the whole
/// job (`MPI_Abort`) stops it.
static HUNG: AtomicBool = AtomicBool::new(false);
/// Whether a rank had not taken its `Shutdown` when the executor stopped.
static LEFT_RUNNING: AtomicBool = AtomicBool::new(false);

/// Interrupts the running executor: every task it holds fails at once as interrupted, and so
/// does every task submitted later. Safe to call from any thread, any number of times.
pub fn interrupt() {
    if let Some(tx) = ACTIVE.lock().unwrap().as_ref() {
        let _ = tx.send(Cmd::Interrupt);
    }
}

/// Whether a rank was lost because it went silent (stopped or hung) rather than dead.
pub fn lost_a_silent_rank() -> bool {
    HUNG.load(Ordering::SeqCst)
}

/// Whether a live rank had not taken its `Shutdown` when the executor stopped (an interrupted
/// run does not wait for running tasks): only ending the whole job stops it.
pub fn left_ranks_running() -> bool {
    LEFT_RUNNING.load(Ordering::SeqCst)
}

/// Rank 0's MPI executor (inside an MPI job of `size` ranks).
pub struct MpiExecutor {
    size: i32,
    prefetch: usize,
    heartbeat_timeout: Duration,
    tx: Option<Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    done: Option<Completer>,
    lost: Arc<Mutex<Vec<String>>>,
}

impl MpiExecutor {
    /// An executor over ranks 1..size, sending up to `prefetch` tasks ahead to each; a rank
    /// silent for `heartbeat_timeout` while it holds a task is lost. Lost ranks are described
    /// in `lost`.
    pub fn new(size: i32, prefetch: usize, heartbeat_timeout: Duration, lost: Arc<Mutex<Vec<String>>>) -> Self {
        MpiExecutor { size, prefetch: prefetch.max(1), heartbeat_timeout, tx: None, thread: None, done: None, lost }
    }
}

enum Cmd {
    Job(Pending),
    Watch(Event),
    Shutdown(bool),
    Interrupt,
}

struct Pending {
    seq: u64,
    task: &'static str,
    args: Vec<WirePayload>,
}

struct Rank {
    rank: i32,
    ready: bool,
    alive: bool,
    watched: bool,
    /// Its liveness connection closed (it took `Shutdown`, or died).
    closed: bool,
    pid: u32,
    host: String,
    in_flight: VecDeque<Pending>,
    /// When it last got a task while idle, or finished one.
    busy_since: Instant,
}

impl Rank {
    fn describe(&self) -> String {
        if self.ready {
            format!("MPI rank {} (pid {} on {})", self.rank, self.pid, self.host)
        } else {
            format!("MPI rank {}", self.rank)
        }
    }
}

struct Comm {
    rx: Receiver<Cmd>,
    done: Completer,
    spec: DataSpec,
    ranks: Vec<Rank>,
    prefetch: usize,
    queue: VecDeque<Pending>,
    sends: Vec<Sending>,
    /// Sends to lost ranks: never completed, never freed (MPI may still read them).
    graveyard: Vec<Sending>,
    inbox: Inbox,
    /// Start-up: where to report, and until when to wait.
    starting: Option<(Sender<Result<(), String>>, Instant)>,
    all_ready_at: Option<Instant>,
    broken: Option<TaskError>,
    lost: Arc<Mutex<Vec<String>>>,
    closing: bool,
    /// The launcher kills every rank when one dies (OpenMPI without recovery): fail every
    /// unfinished task at once, while rank 0 can still record them.
    fail_fast: bool,
    heartbeat_timeout: Duration,
    beats: Arc<Beats>,
    beats_checked: Instant,
    interrupted: bool,
}

impl Executor for MpiExecutor {
    fn start(&mut self, done: Completer, data: Arc<DataLayer>) -> anyhow::Result<()> {
        let (tx, rx) = unbounded();
        let (started_tx, started_rx) = bounded(1);
        self.done = Some(done.clone());
        let (size, prefetch, lost) = (self.size, self.prefetch, self.lost.clone());
        let spec = data.spec().clone();
        let heartbeat_timeout = self.heartbeat_timeout;
        let watch_tx = tx.clone();
        // A few heartbeats per timeout, and at least one every 5 s.
        let beat = (heartbeat_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let watcher = Watcher::start(beat, move |e| {
            let _ = watch_tx.send(Cmd::Watch(e));
        })?;
        let beats = watcher.beats.clone();
        // Built on the communication thread: MPI handles stay on it.
        let comm = move || Comm {
            rx,
            done,
            spec,
            ranks: (1..size)
                .map(|rank| Rank {
                    rank,
                    ready: false,
                    alive: true,
                    watched: false,
                    closed: false,
                    pid: 0,
                    host: String::new(),
                    in_flight: VecDeque::new(),
                    busy_since: Instant::now(),
                })
                .collect(),
            prefetch,
            queue: VecDeque::new(),
            sends: Vec::new(),
            graveyard: Vec::new(),
            inbox: Inbox::default(),
            starting: Some((started_tx, Instant::now() + START_TIMEOUT)),
            all_ready_at: None,
            broken: None,
            lost,
            closing: false,
            fail_fast: super::launch::launcher_kills_job(),
            heartbeat_timeout,
            beats,
            beats_checked: Instant::now(),
            interrupted: false,
        };
        *ACTIVE.lock().unwrap() = Some(tx.clone());
        let thread = std::thread::Builder::new().name("taps-mpi-comm".into()).spawn(move || comm().run(watcher))?;
        super::DRIVER_STARTED.store(true, std::sync::atomic::Ordering::SeqCst);
        self.tx = Some(tx);
        self.thread = Some(thread);
        match started_rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.shutdown(true);
                anyhow::bail!("mpi: {}", e)
            }
            Err(_) => {
                self.shutdown(true);
                anyhow::bail!("mpi: the communication thread ended during start-up")
            }
        }
    }

    fn needs_wire(&self) -> bool {
        true
    }

    fn submit(&mut self, job: Job) {
        let Some(tx) = &self.tx else { return };
        let args: Result<Vec<WirePayload>, TaskError> = job.args.into_iter().map(WirePayload::from_payload).collect();
        match args {
            Ok(args) => {
                let _ = tx.send(Cmd::Job(Pending { seq: job.seq, task: job.def.name, args }));
            }
            Err(e) => {
                if let Some(done) = &self.done {
                    done.complete(Completion { seq: job.seq, outcome: Err(e), execution: None, worker: None });
                }
            }
        }
    }

    fn shutdown(&mut self, cancel: bool) {
        ACTIVE.lock().unwrap().take();
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Cmd::Shutdown(cancel));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn describe(&self) -> String {
        format!("Mpi(ranks={}, workers={}, prefetch={})", self.size, self.size - 1, self.prefetch)
    }
}

/// What the loop does after a command.
#[derive(PartialEq)]
enum Flow {
    Go,
    Stop,
}

impl Comm {
    fn run(mut self, mut watcher: Watcher) {
        super::transport::precise_sleeps();
        if let Err(e) = self.hello(&watcher.address) {
            self.start_failed(e);
        }
        let mut idle_since: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            let mut progress = false;
            loop {
                match self.rx.try_recv() {
                    Ok(c) => {
                        progress = true;
                        if self.command(c) == Flow::Stop {
                            return self.finish(&mut watcher);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.finish(&mut watcher),
                }
            }
            match self.poll_mpi() {
                Ok(p) => progress |= p,
                Err(e) => self.mpi_failed(e),
            }
            if self.starting.is_some() {
                self.check_start();
            }
            self.check_heartbeats();
            if progress {
                idle_since = None;
                continue;
            }
            let active = self.starting.is_some()
                || !self.sends.is_empty()
                || self.inbox.busy()
                || self.ranks.iter().any(|r| r.alive && !r.in_flight.is_empty());
            let idle = idle_since.get_or_insert_with(Instant::now).elapsed();
            // A message under way moves only while both sides poll: spin through transfers
            // (for a while: a rank busy with a long task takes its next input only afterwards).
            let transfer = !self.sends.is_empty() || self.inbox.busy();
            if idle < SPIN || (transfer && idle < TRANSFER_SPIN) {
                // Give the app and the engine's threads of this process a turn now and then.
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(YIELD_EVERY) {
                    std::thread::yield_now();
                }
                continue;
            }
            let got = if !active {
                self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                // Sleep an eighth of the time spent waiting so far, at most MAX_PAUSE.
                self.rx.recv_timeout((idle / 8).min(MAX_PAUSE))
            };
            match got {
                Ok(c) => {
                    idle_since = None;
                    if self.command(c) == Flow::Stop {
                        return self.finish(&mut watcher);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.finish(&mut watcher),
            }
        }
    }

    /// Sends every worker the liveness address and `Hello`.
    fn hello(&mut self, address: &str) -> Result<(), String> {
        for r in &self.ranks {
            self.sends.push(send_text(r.rank, TAG_WATCH, address)?);
            let hello = ToWorker::Hello {
                version: PROTOCOL_VERSION,
                data: self.spec.clone(),
                name: format!("rank-{}", r.rank),
            };
            self.sends.push(send_frame(r.rank, hello.encode())?);
        }
        Ok(())
    }

    fn start_failed(&mut self, e: String) {
        if let Some((tx, _)) = self.starting.take() {
            let _ = tx.send(Err(e));
        }
        self.closing = true;
    }

    fn check_start(&mut self) {
        let Some((_, deadline)) = &self.starting else { return };
        let now = Instant::now();
        let ready = self.ranks.iter().all(|r| r.ready);
        if ready {
            let at = *self.all_ready_at.get_or_insert(now);
            let watched = self.ranks.iter().all(|r| r.watched);
            if watched || now.duration_since(at) >= WATCH_GRACE {
                for r in self.ranks.iter().filter(|r| !r.watched) {
                    tracing::warn!(
                        "mpi: {} has no liveness connection to rank 0 (see its stderr); if it dies, its task \
                         will not be recorded until the run is stopped",
                        r.describe()
                    );
                }
                let hosts: std::collections::BTreeSet<&str> = self.ranks.iter().map(|r| r.host.as_str()).collect();
                tracing::debug!(
                    "mpi: {} worker rank(s) ready on {}",
                    self.ranks.len(),
                    hosts.into_iter().collect::<Vec<_>>().join(", ")
                );
                let (tx, _) = self.starting.take().unwrap();
                let _ = tx.send(Ok(()));
            }
        } else if now >= *deadline {
            let missing: Vec<String> = self.ranks.iter().filter(|r| !r.ready).map(|r| r.rank.to_string()).collect();
            self.start_failed(format!(
                "worker rank(s) {} did not answer within {} s",
                missing.join(", "),
                START_TIMEOUT.as_secs()
            ));
        }
    }

    fn command(&mut self, c: Cmd) -> Flow {
        match c {
            Cmd::Job(p) => {
                if self.interrupted {
                    self.fail(p.seq, interrupted_error(false));
                } else if self.closing {
                    let e = TaskError::new("WorkerLost", "the MPI executor is shutting down");
                    self.fail(p.seq, e);
                } else if let Some(e) = self.broken.clone() {
                    self.fail(p.seq, e);
                } else {
                    self.queue.push_back(p);
                    self.pump();
                }
                Flow::Go
            }
            Cmd::Watch(Event::Connected(r)) => {
                if let Some(rk) = self.rank_mut(r) {
                    rk.watched = true;
                }
                Flow::Go
            }
            Cmd::Watch(Event::Closed(r)) => {
                if let Some(rk) = self.rank_mut(r) {
                    rk.closed = true;
                }
                self.lose(r, "died".into());
                Flow::Go
            }
            Cmd::Interrupt => {
                self.interrupt();
                Flow::Go
            }
            Cmd::Shutdown(cancel) => {
                self.shutdown(cancel);
                Flow::Stop
            }
        }
    }

    fn rank_mut(&mut self, r: i32) -> Option<&mut Rank> {
        self.ranks.get_mut(usize::try_from(r - 1).ok()?)
    }

    fn fail(&self, seq: u64, e: TaskError) {
        self.done.complete(Completion { seq, outcome: Err(e), execution: None, worker: None });
    }

    /// Receives what has arrived, handles complete frames, retires finished sends.
    fn poll_mpi(&mut self) -> Result<bool, String> {
        let mut progress = self.inbox.poll(None)?;
        while let Some((src, _tag, frame)) = self.inbox.take_frame()? {
            progress = true;
            match FromWorker::decode(frame) {
                Ok(m) => self.message(src, m),
                Err(e) => self.lose(src, format!("sent a malformed message ({})", e)),
            }
        }
        let mut failed = Vec::new();
        self.sends.retain_mut(|s| match s.test() {
            Ok(done) => !done,
            Err(e) => {
                failed.push((s.dest, e));
                true
            }
        });
        for (dest, e) in failed {
            self.lose(dest, format!("cannot be reached ({})", e));
        }
        Ok(progress)
    }

    fn message(&mut self, src: i32, m: FromWorker) {
        let starting = self.starting.is_some();
        let Some(rk) = self.rank_mut(src) else {
            tracing::warn!("mpi: message from unexpected rank {}", src);
            return;
        };
        match m {
            FromWorker::Ready { pid, hostname } => {
                rk.ready = true;
                rk.pid = pid;
                rk.host = hostname;
                self.pump();
            }
            FromWorker::Failed { message } => {
                let who = rk.describe();
                if starting {
                    self.start_failed(format!("{}: {}", who, message));
                } else {
                    self.lose(src, format!("failed: {}", message));
                }
            }
            FromWorker::Done { seq, outcome, execution } => {
                rk.busy_since = Instant::now();
                match rk.in_flight.front() {
                    Some(p) if p.seq == seq => drop(rk.in_flight.pop_front()),
                    _ => rk.in_flight.retain(|p| p.seq != seq),
                }
                self.done.complete(Completion {
                    seq,
                    outcome: outcome.map(Into::into),
                    execution: Some(execution),
                    worker: Some(format!("rank-{}", src)),
                });
                self.pump();
            }
        }
    }

    /// Sends queued jobs to ready ranks with room, least loaded first.
    fn pump(&mut self) {
        while !self.queue.is_empty() {
            let prefetch = self.prefetch;
            let Some(rk) = self
                .ranks
                .iter_mut()
                .filter(|r| r.alive && r.ready && r.in_flight.len() < prefetch)
                .min_by_key(|r| r.in_flight.len())
            else {
                return;
            };
            let job = self.queue.pop_front().unwrap();
            let frame = ToWorker::Run { seq: job.seq, task: job.task.to_string(), args: job.args.clone() }.encode();
            let rank = rk.rank;
            if rk.in_flight.is_empty() {
                rk.busy_since = Instant::now();
            }
            rk.in_flight.push_back(job);
            match send_frame(rank, frame) {
                Ok(s) => self.sends.push(s),
                Err(e) => self.lose(rank, format!("cannot be reached ({})", e)),
            }
        }
    }

    /// A rank is gone: fail its running task, re-queue the rest.
    fn lose(&mut self, r: i32, why: String) {
        let closing = self.closing || self.interrupted;
        let starting = self.starting.is_some();
        let Some(rk) = self.rank_mut(r) else { return };
        if !rk.alive || closing {
            return;
        }
        rk.alive = false;
        let who = rk.describe();
        let running = rk.in_flight.pop_front();
        let rest: Vec<Pending> = rk.in_flight.drain(..).collect();
        let msg = format!("{} {}", who, why);
        if self.fail_fast {
            tracing::error!(target: "taps.run", "{}; mpirun (without --enable-recovery) stops the whole job, so every unfinished task is recorded as failed (WorkerLost)", msg);
        } else {
            tracing::error!(target: "taps.run", "{}; its running task is recorded as failed (WorkerLost), its queued tasks go to the other ranks", msg);
        }
        self.lost.lock().unwrap().push(msg.clone());
        if starting {
            self.start_failed(format!("{} during start-up", msg));
        }
        if let Some(p) = running {
            self.done.complete(Completion {
                seq: p.seq,
                outcome: Err(TaskError::new("WorkerLost", format!("{} while running this task", msg))),
                execution: None,
                worker: Some(format!("rank-{}", r)),
            });
        }
        for p in rest.into_iter().rev() {
            self.queue.push_front(p);
        }
        self.inbox.drop_source(r);
        let (dead, live): (Vec<Sending>, Vec<Sending>) = self.sends.drain(..).partition(|s| s.dest == r);
        self.sends = live;
        self.graveyard.extend(dead);
        if self.fail_fast {
            let e = TaskError::new(
                "WorkerLost",
                format!("{}, and mpirun (without --enable-recovery) is stopping the whole job", msg),
            );
            self.broken = Some(e.clone());
            let mut seqs: Vec<u64> = self.queue.drain(..).map(|p| p.seq).collect();
            for r in &mut self.ranks {
                seqs.extend(r.in_flight.drain(..).map(|p| p.seq));
            }
            for s in seqs {
                self.fail(s, e.clone());
            }
        }
        if !self.ranks.iter().any(|r| r.alive) {
            let lost = self.lost.lock().unwrap().join("; ");
            let e = TaskError::new("WorkerLost", format!("no MPI worker rank is left ({})", lost));
            self.broken = Some(e.clone());
            for p in std::mem::take(&mut self.queue) {
                self.fail(p.seq, e.clone());
            }
        }
        self.pump();
    }

    /// Loses every rank that holds a task and was not heard of for `heartbeat_timeout`.
    fn check_heartbeats(&mut self) {
        if self.beats_checked.elapsed() < BEAT_CHECK || self.closing || self.interrupted {
            return;
        }
        self.beats_checked = Instant::now();
        let timeout = self.heartbeat_timeout;
        let silent: Vec<(i32, Duration)> = self
            .ranks
            .iter()
            .filter(|r| r.alive && r.watched && !r.in_flight.is_empty())
            .filter_map(|r| {
                let heard = self.beats.last(r.rank).map_or(r.busy_since, |b| b.max(r.busy_since));
                let quiet = heard.elapsed();
                (quiet >= timeout).then_some((r.rank, quiet))
            })
            .collect();
        for (r, quiet) in silent {
            HUNG.store(true, Ordering::SeqCst);
            self.lose(
                r,
                format!(
                    "sent no heartbeat for {:.1} s while it held a task (stopped or hung; engine.executor.heartbeat_timeout = {} s)",
                    quiet.as_secs_f64(),
                    timeout.as_secs_f64()
                ),
            );
        }
    }

    /// The run is interrupted: every task held here fails at once (the one running on each rank
    /// as interrupted while running), and so does every later one.
    fn interrupt(&mut self) {
        if self.interrupted {
            return;
        }
        self.interrupted = true;
        let mut failed: Vec<(u64, bool)> = Vec::new();
        for r in &mut self.ranks {
            for (i, p) in r.in_flight.drain(..).enumerate() {
                failed.push((p.seq, i == 0));
            }
        }
        failed.extend(self.queue.drain(..).map(|p| (p.seq, false)));
        for (seq, running) in failed {
            self.fail(seq, interrupted_error(running));
        }
    }

    /// MPI itself failed: every task not finished fails, and so does every later one.
    fn mpi_failed(&mut self, e: String) {
        if self.broken.is_some() {
            return;
        }
        tracing::error!(target: "taps.run", "mpi: communication failed: {}", e);
        let err = TaskError::new("WorkerLost", format!("MPI communication failed: {}", e));
        self.broken = Some(err.clone());
        let mut seqs: Vec<u64> = self.queue.drain(..).map(|p| p.seq).collect();
        for r in &mut self.ranks {
            seqs.extend(r.in_flight.drain(..).map(|p| p.seq));
        }
        for s in seqs {
            self.fail(s, err.clone());
        }
        if self.starting.is_some() {
            self.start_failed(format!("MPI communication failed: {}", e));
        }
    }

    /// Tells every live rank to exit and waits until each has taken it (closed its liveness
    /// connection): up to [`SHUTDOWN_TIMEOUT`], or [`CANCEL_TIMEOUT`] when cancelled.
    fn shutdown(&mut self, cancel: bool) {
        self.closing = true;
        let lost = !self.lost.lock().unwrap().is_empty();
        for r in &self.ranks {
            if !r.alive {
                continue;
            }
            if lost && let Ok(s) = send_text(r.rank, TAG_LOST, "") {
                self.sends.push(s);
            }
            if let Ok(s) = send_frame(r.rank, ToWorker::Shutdown.encode()) {
                self.sends.push(s);
            }
        }
        // Every rank closes its liveness connection once it has taken its `Shutdown`. When
        // cancelled, tasks still running were recorded by the engine; they are not awaited.
        let deadline = Instant::now() + if cancel { CANCEL_TIMEOUT } else { SHUTDOWN_TIMEOUT };
        loop {
            let told = self.ranks.iter().all(|r| !r.alive || !r.watched || r.closed);
            if (cancel || self.sends.is_empty()) && told {
                if self.ranks.iter().any(|r| r.alive && !r.watched) {
                    LEFT_RUNNING.store(true, Ordering::SeqCst);
                }
                return;
            }
            if Instant::now() >= deadline {
                LEFT_RUNNING.store(true, Ordering::SeqCst);
                if cancel {
                    return;
                }
                let waiting: Vec<String> =
                    self.ranks.iter().filter(|r| r.alive && r.watched && !r.closed).map(|r| r.describe()).collect();
                tracing::warn!(
                    "mpi: {} did not take Shutdown within {} s",
                    if waiting.is_empty() { "a send".to_string() } else { waiting.join(", ") },
                    SHUTDOWN_TIMEOUT.as_secs()
                );
                return;
            }
            let _ = self.poll_mpi();
            while let Ok(c) = self.rx.try_recv() {
                if let Cmd::Watch(Event::Closed(r)) = c
                    && let Some(rk) = self.rank_mut(r)
                {
                    rk.closed = true;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn finish(mut self, watcher: &mut Watcher) {
        self.closing = true;
        watcher.stop();
        // Requests still pending (cancelled runs, lost ranks) keep their buffers until exit.
        std::mem::forget(std::mem::take(&mut self.sends));
        std::mem::forget(std::mem::take(&mut self.graveyard));
        std::mem::forget(std::mem::take(&mut self.inbox));
    }
}

/// The error of a task failed by [`interrupt`] (the engine's wording).
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
