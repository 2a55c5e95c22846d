//! Rank 0's executor: the [remote-worker core](crate::executor::remote) over MPI. Its transport
//! is one communication thread that makes every MPI call, fed by a channel from the core (frames
//! to send, ranks to forget, shutdown) and from the liveness watcher (a rank's process ended).
//!
//! The core sends up to `prefetch` tasks ahead to each worker rank, least loaded first, so a rank
//! finds its next task waiting when it finishes one. The thread spins for `SPIN` (1 ms) after the
//! last thing that happened (yielding the CPU now and then), keeps spinning while a message is
//! under way, then backs off to sleeping up to `MAX_PAUSE` (1 ms) while answers are due, and blocks on
//! its channel when nothing is outstanding at all. A rank that answers after a long task rings
//! rank 0's liveness watcher, which wakes the thread through its channel; a task sent to a rank
//! that has waited longer than it spins rings that rank ([`liveness`](super::liveness)'s doorbell).
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, unbounded};

use crate::data::DataLayer;
use crate::engine::{Completer, Executor, Job};
use crate::executor::remote::{Link, RemoteExecutor, RemoteOptions, Transport, heartbeat_interval};
use crate::protocol::{Frame, FromWorker, Message, ToWorker};

use super::liveness::{Beats, Event, Watcher};
use super::transport::{Inbox, Sending, TAG_LOST, TAG_SHM, TAG_WATCH, send_frame, send_frame_shared, send_text};

/// How long start-up waits for every rank's `Ready`.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// After a rank is ready, how long to wait for its liveness connection if it is still on its way.
const WATCH_GRACE: Duration = Duration::from_secs(5);
/// Spin this long after the last progress before sleeping.
const SPIN: Duration = Duration::from_millis(1);
/// While spinning, yield the CPU every this many polls.
const YIELD_EVERY: u32 = 16;
/// Spin this long while a message is under way.
const TRANSFER_SPIN: Duration = Duration::from_millis(20);
/// A rank waiting this long for work is dozing (it spins 1 ms, from before rank 0 saw its last
/// answer): work sent to it rings its doorbell.
const RING_AFTER: Duration = Duration::from_micros(800);
/// Longest sleep between polls while answers are due.
const MAX_PAUSE: Duration = Duration::from_millis(1);
/// At the end of a run, how long to wait for every rank to take its `Shutdown`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// At the end of an interrupted run, how long to wait for the ranks to take their `Shutdown`
/// (a rank in the middle of a task takes it only afterwards).
const CANCEL_TIMEOUT: Duration = Duration::from_millis(300);

/// The running executor's core, for [`interrupt`].
static ACTIVE: Mutex<Option<Link>> = Mutex::new(None);
/// Whether a rank was lost to silence: its process may still be there, so only ending the whole
/// job (`MPI_Abort`) stops it.
static HUNG: AtomicBool = AtomicBool::new(false);
/// Whether a rank had not taken its `Shutdown` when the executor stopped.
static LEFT_RUNNING: AtomicBool = AtomicBool::new(false);

/// Interrupts the running executor: every task it holds fails at once as interrupted, and so
/// does every task submitted later. Safe to call from any thread, any number of times.
pub fn interrupt() {
    let link = ACTIVE.lock().unwrap().clone();
    if let Some(link) = link {
        link.interrupt();
    }
}

/// Whether a rank was lost because it went silent (stopped or hung) rather than dead.
pub(crate) fn lost_a_silent_rank() -> bool {
    HUNG.load(Ordering::SeqCst)
}

/// Whether a live rank had not taken its `Shutdown` when the executor stopped (an interrupted
/// run does not wait for running tasks): only ending the whole job stops it.
pub(crate) fn left_ranks_running() -> bool {
    LEFT_RUNNING.load(Ordering::SeqCst)
}

/// Rank 0's MPI executor (inside an MPI job of `size` ranks).
pub struct MpiExecutor {
    size: i32,
    inner: RemoteExecutor,
}

impl MpiExecutor {
    /// An executor over ranks 1..size, sending up to `prefetch` tasks ahead to each; a rank
    /// silent for `heartbeat_timeout` while it holds a task is lost. Lost ranks are described
    /// in `lost`.
    pub fn new(size: i32, prefetch: usize, heartbeat_timeout: Duration, lost: Arc<Mutex<Vec<String>>>) -> Self {
        let transport = Arc::new(Ranks {
            size,
            heartbeat_timeout,
            tx: Mutex::new(None),
            thread: Mutex::new(None),
            beats: Mutex::new(None),
            who: Arc::new(Mutex::new(vec![None; (size - 1).max(0) as usize])),
            lost: lost.clone(),
            shm: Mutex::new(None),
        });
        let opts = RemoteOptions {
            prefetch,
            heartbeat_timeout,
            start_timeout: START_TIMEOUT,
            max_start_failures: 1,
            loss_ends_job: super::launch::launcher_kills_job()
                .then(|| "mpirun (without --enable-recovery) stops the whole job".into()),
            losses: lost,
            ..RemoteOptions::new("mpi")
        };
        MpiExecutor { size, inner: RemoteExecutor::new(transport, opts) }
    }
}

impl Executor for MpiExecutor {
    fn start(&mut self, done: Completer, data: Arc<DataLayer>) -> anyhow::Result<()> {
        super::DRIVER_STARTED.store(true, Ordering::SeqCst);
        self.inner.start(done, data).map_err(|e| anyhow::anyhow!("mpi: {}", e))
    }

    fn needs_wire(&self) -> bool {
        true
    }

    fn submit(&mut self, job: Job) {
        self.inner.submit(job);
    }

    fn shutdown(&mut self, cancel: bool) {
        self.inner.shutdown(cancel);
    }

    fn describe(&self) -> String {
        format!("Mpi(ranks={}, workers={}, prefetch={})", self.size, self.size - 1, self.inner.options().prefetch)
    }

    fn direct(&self) -> bool {
        self.inner.direct()
    }
}

/// The MPI transport: worker rank `r` is slot `r - 1`; every MPI call is made on the
/// communication thread.
struct Ranks {
    size: i32,
    heartbeat_timeout: Duration,
    tx: Mutex<Option<Sender<Cmd>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    beats: Mutex<Option<Arc<Beats>>>,
    /// Each rank's pid and host, once it is ready (noted by the communication thread).
    who: Who,
    lost: Arc<Mutex<Vec<String>>>,
    /// The run's named shared-memory segments (removed at stop).
    shm: Mutex<Option<crate::shm::Run>>,
}

impl Ranks {
    fn cmd(&self, c: Cmd) {
        if let Some(tx) = self.tx.lock().unwrap().as_ref() {
            let _ = tx.send(c);
        }
    }
}

impl Transport for Ranks {
    fn slots(&self) -> usize {
        (self.size - 1).max(0) as usize
    }

    fn start(&self, link: Link) -> anyhow::Result<()> {
        let (tx, rx) = unbounded();
        let watch_tx = tx.clone();
        let watcher = Watcher::start(heartbeat_interval(self.heartbeat_timeout), move |e| {
            let _ = watch_tx.send(Cmd::Watch(e));
        })?;
        *self.beats.lock().unwrap() = Some(watcher.beats.clone());
        *self.tx.lock().unwrap() = Some(tx);
        *ACTIVE.lock().unwrap() = Some(link.clone());
        let n = self.slots();
        let (lost, who) = (self.lost.clone(), self.who.clone());
        // Ranks that see this directory get large payloads as named segments in it.
        let dir = crate::shm::shm_dir();
        let shm = match crate::shm::Run::start_driver(&dir) {
            Ok(run) => Some(run),
            Err(e) => {
                tracing::debug!("mpi: no shared memory in {} ({}); payloads go in messages", dir.display(), e);
                None
            }
        };
        let shm_text = shm.as_ref().map(|r| format!("{}\n{}", r.dir.display(), r.prefix));
        *self.shm.lock().unwrap() = shm;
        // Built on the communication thread: MPI handles stay on it.
        let comm = move || Comm {
            rx,
            link,
            ranks: (1..=n as i32).map(Rank::new).collect(),
            sends: Vec::new(),
            graveyard: Vec::new(),
            inbox: Inbox::default(),
            lost,
            who,
            shm: shm_text,
        };
        let thread = std::thread::Builder::new().name("taps-mpi-comm".into()).spawn(move || comm().run(watcher))?;
        *self.thread.lock().unwrap() = Some(thread);
        Ok(())
    }

    fn send(&self, slot: usize, frame: Frame) {
        self.cmd(Cmd::Send(slot as i32 + 1, frame));
    }

    fn describe(&self, slot: usize) -> String {
        match &self.who.lock().unwrap().get(slot).cloned().flatten() {
            Some((pid, host)) => format!("MPI rank {} (pid {} on {})", slot + 1, pid, host),
            None => format!("MPI rank {}", slot + 1),
        }
    }

    fn heard(&self, slot: usize) -> Option<Instant> {
        self.beats.lock().unwrap().as_ref()?.last(slot as i32 + 1)
    }

    fn kill(&self, slot: usize) -> bool {
        // A silent rank cannot be killed from here: only ending the job (MPI_Abort) stops it.
        HUNG.store(true, Ordering::SeqCst);
        self.cmd(Cmd::Forget(slot as i32 + 1));
        false
    }

    fn stop(&self, cancel: bool, _alive: &[bool]) {
        ACTIVE.lock().unwrap().take();
        if let Some(tx) = self.tx.lock().unwrap().take() {
            let _ = tx.send(Cmd::Shutdown(cancel));
        }
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
        // Whatever named segment of the run is left (results of lost ranks, an interrupted run).
        if let Some(run) = self.shm.lock().unwrap().take() {
            run.cleanup();
        }
        crate::shm::drop_idle();
    }
}

/// Each worker rank's pid and host, by slot.
type Who = Arc<Mutex<Vec<Option<(u32, String)>>>>;

enum Cmd {
    Send(i32, Frame),
    Forget(i32),
    Watch(Event),
    Shutdown(bool),
}

struct Rank {
    rank: i32,
    /// Ready, and (once it is watched or [`WATCH_GRACE`] has passed) reported to the core.
    ready: Option<Instant>,
    reported: bool,
    alive: bool,
    watched: bool,
    /// Its liveness connection closed (it took `Shutdown`, or died).
    closed: bool,
    pid: u32,
    host: String,
    /// Tasks sent and not yet answered.
    outstanding: usize,
    /// Since when it has had nothing to do (its last answer, or `Ready`).
    idle_since: Option<Instant>,
    /// It sees the run's shared-memory directory (large payloads go by name).
    shares: bool,
}

impl Rank {
    fn new(rank: i32) -> Rank {
        Rank {
            rank,
            ready: None,
            reported: false,
            alive: true,
            watched: false,
            closed: false,
            pid: 0,
            host: String::new(),
            outstanding: 0,
            idle_since: None,
            shares: false,
        }
    }

    fn describe(&self) -> String {
        if self.ready.is_some() {
            format!("MPI rank {} (pid {} on {})", self.rank, self.pid, self.host)
        } else {
            format!("MPI rank {}", self.rank)
        }
    }

    fn slot(&self) -> usize {
        (self.rank - 1) as usize
    }
}

struct Comm {
    rx: Receiver<Cmd>,
    link: Link,
    ranks: Vec<Rank>,
    sends: Vec<Sending>,
    /// Sends to lost ranks: never completed, never freed (MPI may still read them).
    graveyard: Vec<Sending>,
    inbox: Inbox,
    lost: Arc<Mutex<Vec<String>>>,
    who: Who,
    /// The run's shared-memory directory and prefix, for the ranks (`DIR\nPREFIX`).
    shm: Option<String>,
}

impl Comm {
    fn run(mut self, mut watcher: Watcher) {
        super::transport::precise_sleeps();
        for r in 0..self.ranks.len() {
            self.link.started(r, 0);
        }
        if let Err(e) = self.hello(&watcher.address) {
            self.link.broke(format!("MPI communication failed: {}", e));
        }
        let mut idle_since: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            let mut progress = false;
            loop {
                match self.rx.try_recv() {
                    Ok(Cmd::Shutdown(cancel)) => return self.finish(cancel, &mut watcher),
                    Ok(c) => {
                        progress = true;
                        self.command(c, &watcher);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.finish(true, &mut watcher),
                }
            }
            match self.poll_mpi() {
                Ok(p) => progress |= p,
                Err(e) => self.link.broke(format!("MPI communication failed: {}", e)),
            }
            let starting = self.report_ready();
            if progress {
                idle_since = None;
                continue;
            }
            let active = starting
                || !self.sends.is_empty()
                || self.inbox.busy()
                || self.ranks.iter().any(|r| r.alive && r.outstanding > 0);
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
                Ok(Cmd::Shutdown(cancel)) => return self.finish(cancel, &mut watcher),
                Ok(c) => {
                    idle_since = None;
                    self.command(c, &watcher);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.finish(true, &mut watcher),
            }
        }
    }

    /// Sends every worker the liveness address and `Hello`.
    fn hello(&mut self, address: &str) -> Result<(), String> {
        for r in &self.ranks {
            if let Some(text) = &self.shm {
                self.sends.push(send_text(r.rank, TAG_SHM, text)?);
            }
            self.sends.push(send_text(r.rank, TAG_WATCH, address)?);
            self.sends.push(send_frame(r.rank, self.link.hello(format!("rank-{}", r.rank)))?);
        }
        Ok(())
    }

    /// Reports ranks that are ready and watched (or whose liveness connection did not come
    /// within [`WATCH_GRACE`]) to the core; whether some rank is still starting.
    fn report_ready(&mut self) -> bool {
        let mut starting = false;
        for r in &mut self.ranks {
            if r.reported || !r.alive {
                continue;
            }
            match r.ready {
                Some(at) if r.watched || at.elapsed() >= WATCH_GRACE => {
                    if !r.watched {
                        tracing::warn!(
                            "mpi: {} has no liveness connection to rank 0 (see its stderr); if it dies, its task \
                             will not be recorded until the run is stopped",
                            r.describe()
                        );
                    }
                    r.reported = true;
                    self.who.lock().unwrap()[r.slot()] = Some((r.pid, r.host.clone()));
                    self.link.ready(r.slot(), 0, format!("rank-{}", r.rank));
                }
                _ => starting = true,
            }
        }
        starting
    }

    fn command(&mut self, c: Cmd, watcher: &Watcher) {
        match c {
            Cmd::Send(rank, frame) => {
                let Some(r) = self.rank_mut(rank).filter(|r| r.alive) else { return };
                r.outstanding += 1;
                let dozing = r.idle_since.take().is_some_and(|at| at.elapsed() >= RING_AFTER);
                match send_frame_shared(rank, frame, r.shares) {
                    Ok(s) => {
                        self.sends.push(s);
                        if dozing {
                            watcher.ring(rank);
                        }
                    }
                    Err(e) => self.lose(rank, format!("cannot be reached ({})", e)),
                }
            }
            // The rank's answer is on its way: the poll that follows takes it.
            Cmd::Watch(Event::Wake(_)) => {}
            Cmd::Forget(rank) => self.forget(rank),
            Cmd::Watch(Event::Connected(r)) => {
                if let Some(rk) = self.rank_mut(r) {
                    rk.watched = true;
                }
            }
            Cmd::Watch(Event::Closed(r)) => {
                if let Some(rk) = self.rank_mut(r) {
                    rk.closed = true;
                }
                self.lose(r, "died".into());
            }
            Cmd::Shutdown(_) => {}
        }
    }

    fn rank_mut(&mut self, r: i32) -> Option<&mut Rank> {
        self.ranks.get_mut(usize::try_from(r - 1).ok()?)
    }

    /// Receives what has arrived, handles complete frames, retires finished sends.
    fn poll_mpi(&mut self) -> Result<bool, String> {
        let mut progress = self.inbox.poll(None)?;
        while let Some((src, tag, frame)) = self.inbox.take_frame()? {
            progress = true;
            if tag == TAG_SHM {
                if let Some(r) = self.rank_mut(src) {
                    r.shares = frame.header == b"1";
                    if r.shares {
                        tracing::debug!("mpi: rank {} takes large payloads through shared memory", src);
                    }
                }
                continue;
            }
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
        let Some(rk) = self.rank_mut(src).filter(|r| r.alive) else {
            tracing::warn!("mpi: message from unexpected rank {}", src);
            return;
        };
        match m {
            FromWorker::Ready { pid, hostname } => {
                rk.ready = Some(Instant::now());
                rk.idle_since = rk.ready;
                rk.pid = pid;
                rk.host = hostname;
            }
            FromWorker::Failed { message } => self.lose(src, format!("failed: {}", message)),
            FromWorker::Done { seq, outcome, execution } => {
                rk.outstanding = rk.outstanding.saturating_sub(1);
                if rk.outstanding == 0 {
                    rk.idle_since = Some(Instant::now());
                }
                let slot = rk.slot();
                self.link.done(slot, 0, seq, outcome, execution);
            }
        }
    }

    /// A rank is gone: the core fails its running task and re-queues the rest.
    fn lose(&mut self, r: i32, why: String) {
        let Some(rk) = self.rank_mut(r).filter(|r| r.alive) else { return };
        let (slot, msg) = (rk.slot(), format!("{} {}", rk.describe(), why));
        self.forget(r);
        self.link.lost(slot, 0, msg);
    }

    /// Stops talking to rank `r`: what it was sent or sending is abandoned.
    fn forget(&mut self, r: i32) {
        let Some(rk) = self.rank_mut(r) else { return };
        rk.alive = false;
        rk.outstanding = 0;
        self.inbox.drop_source(r);
        let (dead, live): (Vec<Sending>, Vec<Sending>) = self.sends.drain(..).partition(|s| s.dest == r);
        self.sends = live;
        self.graveyard.extend(dead);
    }

    /// Tells every live rank to exit and waits until each has taken it (closed its liveness
    /// connection): up to [`SHUTDOWN_TIMEOUT`], or [`CANCEL_TIMEOUT`] when cancelled.
    fn shutdown(&mut self, cancel: bool) {
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

    fn finish(mut self, cancel: bool, watcher: &mut Watcher) {
        self.shutdown(cancel);
        watcher.stop();
        // Requests still pending (cancelled runs, lost ranks) keep their buffers until exit.
        std::mem::forget(std::mem::take(&mut self.sends));
        std::mem::forget(std::mem::take(&mut self.graveyard));
        std::mem::forget(std::mem::take(&mut self.inbox));
    }
}
